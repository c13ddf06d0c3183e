//go:build tools

// Package tools pins the Kubernetes commands so `go build` can build them from this module: the
// control plane (kube-apiserver), what makes pods run on a node (kube-controller-manager,
// kube-scheduler, kubelet, kube-proxy) and the real client (kubectl).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
