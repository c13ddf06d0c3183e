"""The local Kubernetes cluster of Podgraft's tests and of `make cluster`: one module both use, like
envtest in controller-runtime.

- `processes`: child processes in process groups of their own, stopped by PID; waiting for them.
- `controlplane`: etcd and kube-apiserver built from the pinned Go modules (hack/controlplane).
- `node`, `host`, `configs`: a real node on this machine (controller-manager, scheduler,
  containerd, kubelet, kube-proxy) and everything it makes on the host, removed again by PID,
  mount, link, chain and cgroup.

The e2e tier uses the control plane alone (on loopback); the node tier and `make cluster` add the
node beside it.
"""
