"""The configuration files of the node's components: containerd (CRI plugin, overlayfs, runc v2 shim,
cgroupfs), the CNI bridge network, and the kubelet's KubeletConfiguration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .controlplane import SERVICE_RANGE
from .host import BRIDGE, CGROUP_ROOT, NODE_IP, POD_SUBNET
from .processes import LOOPBACK

CNI_BIN = Path("/usr/lib/cni")


def containerd_config(root: Path, *, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{root}/containerd"
state = "{root}/containerd-state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{root}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[{cri}]
  sandbox_image = "{pause_image}"
  netns_mounts_under_state_dir = true
  # this sandbox has no CAP_SYS_RESOURCE: runc cannot set a pod's oom_score_adj below containerd's
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{root}/cni"
    max_conf_num = 1
"""


def cni_config(root: Path) -> dict[str, Any]:
    """One bridge network; pods reach each other on it and Services through the host (kube-proxy),
    nothing else: no default route, no masquerading."""
    return {
        "cniVersion": "1.0.0",
        "name": "podgraft-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": SERVICE_RANGE}],
                    "dataDir": str(root / "cni-ipam"),
                },
            }
        ],
    }


def kubelet_config(root: Path, *, ca_file: Path, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this machine has cgroup v1
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{root}/containerd.sock",
        "address": NODE_IP,  # the apiserver reaches kubelets at their InternalIP, never loopback
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": healthz_port,
        # only the apiserver calls the kubelet, with its kubelet-client certificate
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here: the kubelet cannot lower its own score either
        # the images are imported, never pulled: never garbage-collect them, never evict for disk
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1%", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
    }
