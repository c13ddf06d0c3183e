"""Issue 10, scenario 6: `kubectl debug` (the real client) adds an ephemeral container that starts with
the policy's debug mount and env; an image outside `allowedImages` is refused with the policy's words."""

from __future__ import annotations

from tests.e2e.kube import container, eventually

from .conftest import Cluster, statuses
from .workloads import UNTIL_STOPPED


def test_kubectl_debug_container_starts_with_the_policy_mount_and_a_disallowed_image_is_refused(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("debug")
    name = cluster.logging_app(ns, "target")
    script = f'cat /debug/logs/app.log; echo "session $DEBUG_SESSION"; {UNTIL_STOPPED}'
    debug = ["debug", f"--namespace={ns}", name, "--profile=general", "--quiet"]
    cluster.kubectl.run(*debug, f"--image={cluster.image}", "--container=debugger", "--", "sh", "-c", script)

    def started() -> str:
        current = cluster.kube.read_pod(ns, name)
        state = statuses(current, "ephemeralContainerStatuses").get("debugger", {}).get("state", {})
        assert "running" in state, state
        return cluster.logs(ns, name, "debugger")

    output = eventually(started, timeout=120, interval=0.5, what="the debug container runs")
    assert f"app {name} version none" in output  # the app's log file, through the policy's mount
    assert f"session {ns}/{name}" in output
    spec = container(cluster.kube.read_pod(ns, name), "debugger", kind="ephemeralContainers")
    assert {"name": "app-logs", "mountPath": "/debug/logs", "readOnly": True} in spec["volumeMounts"]

    refused = cluster.kubectl.run(
        *debug, f"--image={cluster.images.pause}", "--container=intruder", check=False
    )
    assert refused.returncode != 0
    assert (
        f"podgraft: policy 'log-shipper' does not allow image '{cluster.images.pause}' for ephemeral "
        "container 'intruder'"
    ) in refused.stderr
    current = cluster.kube.read_pod(ns, name)
    assert [c["name"] for c in current["spec"]["ephemeralContainers"]] == ["debugger"]
