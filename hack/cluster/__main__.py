"""`make cluster` and `make cluster-down`: the node tier's one-node cluster for a developer.

    python -m hack.cluster up      # start it, install Podgraft with its chart, print how to use it
    python -m hack.cluster down    # stop it and remove everything it made on this machine

`up` is the node tier's own code (LocalCluster, the image from the Dockerfile, `helm install`), with
its processes detached so that they outlive the command; their PIDs and start times are written to
STATE, and `down` stops exactly those (by PID, never by name), then cleans the host as the tests do.
Needs root (containerd, a kubelet, a bridge, iptables).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.cluster.client import raw_json

from .cluster import LocalCluster, process_state, stop_detached
from .controlplane import api_client
from .host import hold_node_lock, write_lock_note
from .node import prepare_images
from .processes import Managed, wait_for
from .release import Release, helm_binary, image_values

WORKDIR = Path("/var/lib/podgraft-cluster")
STATE = WORKDIR / "state.json"
DEMO_NAMESPACE = "demo"
INJECTION_LABEL = "podgraft.io/injection"
SHIP_LOGS = "until [ -f /logs/app.log ]; do sleep 1; done; exec tail -n +1 -f /logs/app.log"


def demo_values(busybox: str) -> dict[str, Any]:
    """The example policy installed with the chart (`policies.definitions`): a native log-shipper
    sidecar for every pod labelled app=hello, tailing what the app writes to a shared volume. Its
    image is the busybox the node has (no registry is reachable here)."""
    return {
        "policies": {
            "definitions": {
                "log-shipper": {
                    "match": {"labels": {"app": "hello"}},
                    "sidecarMode": "native",
                    "volumes": [{"name": "app-logs", "emptyDir": {}}],
                    "volumeMounts": [{"name": "app-logs", "mountPath": "/var/log/app"}],
                    "sidecars": [
                        {
                            "name": "log-shipper",
                            "image": busybox,
                            "command": ["sh", "-c", SHIP_LOGS],
                            "volumeMounts": [{"name": "app-logs", "mountPath": "/logs", "readOnly": True}],
                        }
                    ],
                }
            }
        }
    }


def demo_deployment(busybox: str) -> dict[str, Any]:
    """What `kubectl create deployment hello --image=BUSYBOX -- sh -c ...` makes, with a log line."""
    app = {
        "name": "busybox",
        "image": busybox,
        "command": [
            "sh",
            "-c",
            'while true; do echo "hello from $HOSTNAME" >> /var/log/app/app.log; sleep 5; done',
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello", "labels": {"app": "hello"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [app]}},
        },
    }


def _read_state() -> dict[str, Any] | None:
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return None


def _alive(state: dict[str, Any]) -> bool:
    processes = [*state["cluster"]["plane"], *state["cluster"]["node"], state["lock"]]
    return any(Managed.adopt(p["name"], p["pid"], p["started"], Path(p["log"])).alive() for p in processes)


def _say(text: str) -> None:
    print(text, flush=True)


def _first_injected_pod(cluster: LocalCluster, busybox: str) -> float:
    """Label the demo namespace, create the demo Deployment, wait for its pod injected and Ready."""
    from kubernetes import client

    namespace = {"metadata": {"name": DEMO_NAMESPACE, "labels": {INJECTION_LABEL: "enabled"}}}
    with api_client(cluster.plane.admin_kubeconfig) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace(namespace)  # type: ignore[arg-type]  # the client sends a dict as is

        def created() -> bool:
            apps.create_namespaced_deployment(DEMO_NAMESPACE, demo_deployment(busybox))  # type: ignore[arg-type]
            return True

        wait_for(created, timeout=60, what="the demo Deployment created (ServiceAccount default)")

        def ready() -> bool:
            pods = raw_json(core.list_namespaced_pod, DEMO_NAMESPACE, label_selector="app=hello")["items"]
            return any(
                (p["metadata"].get("annotations") or {}).get("podgraft.io/status")
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions") or []
                )
                for p in pods
            )

        wait_for(ready, timeout=180, what="the demo pod injected and Ready")
        return time.monotonic()


def up() -> int:
    started = time.monotonic()
    state = _read_state()
    if state is not None and _alive(state):
        _say(f"a cluster is up already (make cluster-down stops it)\n\n{state['usage']}")
        return 0
    if state is not None:  # a crashed or half-stopped one
        stop_detached(state["cluster"])
    _say("make cluster: building or reusing the binaries and images (the first time: about 10 minutes)")
    images = prepare_images()
    helm = helm_binary()
    lock = hold_node_lock("make cluster")
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    # the node lock stays held by this process, until `make cluster-down` stops it
    holder = Managed.spawn(
        "node-lock",
        ["sleep", "infinity"],
        log_path=WORKDIR / "logs" / "node-lock.log",
        detached=True,
        pass_fds=[lock.fileno()],
    )
    write_lock_note(lock, "make cluster", holder.pid)
    lock.close()
    cluster: LocalCluster | None = None
    try:
        _say("starting etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy")
        cluster = LocalCluster.start(WORKDIR, images=images, detached=True)
        bin_dir = WORKDIR / "bin"
        bin_dir.mkdir()
        (bin_dir / "kubectl").symlink_to(cluster.plane.binaries["kubectl"])
        (bin_dir / "helm").symlink_to(helm)
        kubeconfig = cluster.plane.admin_kubeconfig
        usage = (
            f"export KUBECONFIG={kubeconfig}\n"
            f"export PATH={bin_dir}:$PATH      # the pinned kubectl and helm\n\n"
            f"kubectl -n {DEMO_NAMESPACE} get pods -o custom-columns="
            "NAME:.metadata.name,STATUS:.status.phase,CONTAINERS:.spec.containers[*].name,"
            "SIDECARS:.spec.initContainers[*].name\n"
            f"kubectl -n {DEMO_NAMESPACE} logs deployment/hello -c log-shipper"
        )
        _write_state(cluster, holder, usage)
        _say(
            "installing Podgraft: helm install podgraft charts/podgraft -n podgraft "
            "(the image imported into the node, pullPolicy Never)"
        )
        release = Release(helm, kubeconfig, WORKDIR / "helm")
        release.install(image_values(images.podgraft) | demo_values(images.busybox))
        ready_at = _first_injected_pod(cluster, images.busybox)
    except BaseException:
        if cluster is not None:
            cluster.stop()
        holder.stop()
        STATE.unlink(missing_ok=True)
        raise
    _say(
        f"\nfirst injected pod Ready {ready_at - started:.0f}s after `make cluster` started "
        f"(namespace {DEMO_NAMESPACE}, labelled {INJECTION_LABEL}=enabled; Deployment hello).\n"
        f"Logs: {WORKDIR / 'logs'}. Stop it all with `make cluster-down`.\n\n{usage}"
    )
    return 0


def _write_state(cluster: LocalCluster, holder: Managed, usage: str) -> None:
    state = {
        "cluster": cluster.state(),
        "lock": process_state(holder),
        "usage": usage,
    }
    STATE.write_text(json.dumps(state, indent=2))


def down() -> int:
    state = _read_state()
    if state is None:
        _say("make cluster-down: no cluster recorded; cleaning the host anyway")
        lock = hold_node_lock("make cluster-down")
        try:
            stop_detached({})
        finally:
            lock.close()
    else:
        stop_detached(state["cluster"])
        lock = state["lock"]
        Managed.adopt(lock["name"], lock["pid"], lock["started"], Path(lock["log"])).stop()
    shutil.rmtree(WORKDIR, ignore_errors=True)
    _say(
        f"make cluster-down: stopped; removed {WORKDIR}, the node's state and its bridge, chains and cgroups"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make cluster needs root: it runs containerd and a kubelet", file=sys.stderr)
        return 1
    try:
        return up() if args.command == "up" else down()
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
