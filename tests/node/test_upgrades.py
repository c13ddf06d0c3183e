"""Issue 16, §3: upgrades and failures of the installed release, under a load of pod creations
through the real apiserver (load.py: bare pods, >= 5 a second, failurePolicy Fail): `helm upgrade`
rolling the pods, `helm upgrade` of `policies.definitions`, one and both webhook pods deleted,
`helm uninstall` with and without the chart's pre-delete hook, and `tls.mode=secret` with a
certificate from `podgraft certs generate`. The tests run in this order, on the session's one
release; the last one leaves the chart installed as the session installed it.

The figures of each scenario (tried, failed, max latency) are printed at the end of the session and
copied into the README's failure table."""

from __future__ import annotations

import base64
import concurrent.futures
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from hack.cluster.processes import REPO
from tests.e2e.kube import eventually, injected

from .conftest import CHART_POLICY, Cluster, chart_policies
from .load import Attempt, Load
from .test_install import _audit, states
from .workloads import app_container, deployment, pod_spec


@pytest.fixture
def load(cluster: Cluster) -> Load:
    return Load(cluster.local.plane.admin_kubeconfig, cluster.namespace("load"), cluster.image, CHART_POLICY)


def _more(load: Load, count: int) -> None:
    """Wait until `count` more creations were tried (the load goes on around an event)."""
    target = len(load.attempts) + count
    eventually(lambda: _at_least(load, target), timeout=120, what=f"{count} more creations")


def _at_least(load: Load, count: int) -> None:
    assert len(load.attempts) >= count, f"{len(load.attempts)} creations"


def _ca(cluster: Cluster) -> tuple[str, str]:
    """(ca.crt of the chart's Secret, the webhook's caBundle)."""
    name, namespace = cluster.release.fullname, cluster.release.namespace
    secret = cluster.core.read_namespaced_secret(f"{name}-tls", namespace)
    (webhook,) = cluster.kube.webhook_configuration(name)["webhooks"]
    return secret.data["ca.crt"], webhook["clientConfig"]["caBundle"]


def _names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def _gone(cluster: Cluster, names: set[str]) -> None:
    left = _names(cluster.webhook_pods()) & names
    assert not left, f"still there: {left}"


def test_helm_upgrade_rolls_the_pods_with_no_failed_creation_and_keeps_the_ca(
    cluster: Cluster, load: Load
) -> None:
    before, ca = _names(cluster.wait_webhook()), _ca(cluster)
    repository, _, tag = cluster.images.podgraft.rpartition(":")
    cluster.local.node.tag_image(cluster.images.podgraft, f"{repository}:{tag}-rolled")
    with load.running():
        _more(load, 10)
        cluster.release.upgrade({"image": {"tag": f"{tag}-rolled"}})
        eventually(lambda: _gone(cluster, before), timeout=120, what="the old pods gone")
        _more(load, 20)
    load.figures("helm upgrade rolls the pods (image tag)")
    assert load.failed == [], load.failed[:3]
    assert all(CHART_POLICY in a.injected for a in load.attempts)
    after = cluster.wait_webhook()
    assert not _names(after) & before
    assert {p["spec"]["containers"][0]["image"] for p in after} == {f"{repository}:{tag}-rolled"}
    assert _ca(cluster) == ca  # the generated CA and the caBundle are kept across upgrades


def test_helm_upgrade_of_policy_definitions_reaches_new_pods_and_the_audit_calls_old_ones_stale(
    cluster: Cluster, load: Load
) -> None:
    ns = cluster.namespace("stamped")
    spec = pod_spec([app_container(cluster.image)], automountServiceAccountToken=True)
    cluster.create(ns, deployment("old", replicas=1, spec=spec, inject=CHART_POLICY))
    (old,) = cluster.wait_pods(ns, "old", count=1)
    with load.running():
        _more(load, 10)
        upgrade_at = load.now()
        cluster.release.upgrade(chart_policies("v2"))
        upgraded_at = load.now()
        eventually(lambda: _stamped(load, "v2"), timeout=60, what="a pod with the new version")
        _more(load, 20)
    new = [a.at for a in load.succeeded if a.stamp == "v2"]
    last_old = max(a.at for a in load.succeeded if a.stamp == "v1")
    load.figures(
        "helm upgrade of policies.definitions",
        helm_upgrade_s=round(upgraded_at - upgrade_at, 1),
        first_new_after_s=round(min(new) - upgrade_at, 1),
        last_old_after_s=round(last_old - upgrade_at, 1),
    )
    assert load.failed == [], load.failed[:3]
    assert all(a.stamp == "v2" for a in load.succeeded if a.at > last_old)
    assert [a.stamp for a in load.succeeded[-10:]] == ["v2"] * 10
    code, report = _audit(cluster, ns)
    assert code == 1
    assert states(report) == {(old["metadata"]["name"], CHART_POLICY): "stale"}


def _stamped(load: Load, stamp: str) -> None:
    assert any(a.stamp == stamp for a in load.succeeded), "not yet"


def test_one_webhook_pod_deleted_no_creation_fails(cluster: Cluster, load: Load) -> None:
    before = cluster.wait_webhook()
    victim = before[0]["metadata"]["name"]
    with load.running():
        _more(load, 10)
        cluster.core.delete_namespaced_pod(victim, cluster.release.namespace)
        eventually(lambda: _gone(cluster, {victim}), timeout=120, what=f"{victim} gone")
        after = cluster.wait_webhook()
        _more(load, 20)
    load.figures("one webhook pod deleted")
    assert load.failed == [], load.failed[:3]
    assert victim not in _names(after)


def _both_down(cluster: Cluster, load: Load, grace_period: int | None) -> list[Attempt]:
    """Delete both webhook pods under load; every failure is the apiserver's webhook error, and the
    creations after the last one succeed, injected, with nothing done by hand. Returns the failures."""
    before = _names(cluster.wait_webhook())
    with load.running():
        _more(load, 10)
        for name in before:
            cluster.core.delete_namespaced_pod(
                name, cluster.release.namespace, grace_period_seconds=grace_period
            )
        eventually(lambda: _gone(cluster, before), timeout=120, what="both old pods gone")
        cluster.wait_webhook()
        _more(load, 30)
    failed = load.failed
    assert all("failed calling webhook" in a.error for a in failed), {a.error for a in failed}
    recovered = [a for a in load.succeeded if not failed or a.at > failed[-1].at]
    assert len(recovered) >= 20
    assert all(CHART_POLICY in a.injected for a in recovered)  # injected again, no manual step
    return failed


def _window(failed: list[Attempt]) -> dict[str, Any]:
    return {
        "failing_for_s": round(failed[-1].at - failed[0].at, 1) if failed else 0.0,
        "errors": sorted({a.error.split(": ")[-1] for a in failed}),
    }


def test_both_webhook_pods_deleted_creations_fail_at_most_until_a_replacement_is_ready(
    cluster: Cluster, load: Load
) -> None:
    """Deleted as a drain or `kubectl delete` does: both keep serving through their 5 s drain, and
    whether a replacement is Ready before both stop decides whether anything fails at all."""
    failed = _both_down(cluster, load, grace_period=None)
    load.figures("both webhook pods deleted (graceful)", **_window(failed))


def test_both_webhook_pods_killed_creations_fail_until_one_is_back_then_succeed_injected(
    cluster: Cluster, load: Load
) -> None:
    """Force-deleted (grace period 0: as when their node dies), none is Ready until the replacements
    are: creations fail with the apiserver's webhook error, then succeed, injected, by themselves."""
    failed = _both_down(cluster, load, grace_period=0)
    assert failed, "no creation failed while no webhook pod was Ready"
    load.figures("both webhook pods killed (grace period 0)", **_window(failed))


def _gone_at(cluster: Cluster, load: Load, stop: threading.Event) -> dict[str, float]:
    """When the Service and the webhook configuration disappeared (polled every 20 ms)."""
    name, namespace = cluster.release.fullname, cluster.release.namespace
    reads = {
        "service": lambda: cluster.core.read_namespaced_service(name, namespace),
        "webhook": lambda: cluster.kube.webhook_configuration(name),
    }
    gone: dict[str, float] = {}
    while not stop.is_set() and len(gone) < len(reads):
        for what, read in reads.items():
            if what not in gone:
                try:
                    read()
                except ApiException as exc:
                    if exc.status == 404:
                        gone[what] = load.now()
        time.sleep(0.02)
    return gone


def _uninstalled(cluster: Cluster, load: Load, scenario: str) -> dict[str, Any]:
    """`helm uninstall` under load; the figures (with how long the webhook configuration outlived
    its Service: the window in which creations can fail), and the creations after it are uninjected."""
    stop, gone = threading.Event(), {}
    with load.running(), concurrent.futures.ThreadPoolExecutor(1) as pool:
        _more(load, 10)
        watching = pool.submit(_gone_at, cluster, load, stop)
        started = load.now()
        cluster.release.uninstall()
        done = load.now()
        _more(load, 20)
        stop.set()
        gone = watching.result()
    after = [a for a in load.succeeded if a.at > done]
    assert after
    assert all(a.injected == () for a in after)  # created, uninjected, right after
    with pytest.raises(ApiException) as missing:
        cluster.kube.webhook_configuration(cluster.release.fullname)
    assert missing.value.status == 404  # the MutatingWebhookConfiguration did not outlive the release
    return load.figures(
        scenario,
        uninstall_s=round(done - started, 1),
        webhook_outlived_service_s=round(gone["webhook"] - gone["service"], 2),
    )


def _left_behind(cluster: Cluster, selector: str = "") -> list[str]:
    """What the release namespace still holds (kind/name), of `selector`."""
    namespace, core = cluster.release.namespace, cluster.core
    found = [
        f"configmap/{c.metadata.name}"
        for c in core.list_namespaced_config_map(namespace, label_selector=selector).items
    ]
    found += [
        f"secret/{c.metadata.name}"
        for c in core.list_namespaced_secret(namespace, label_selector=selector).items
    ]
    found += [
        f"serviceaccount/{c.metadata.name}"
        for c in core.list_namespaced_service_account(namespace, label_selector=selector).items
    ]
    found += [
        f"service/{c.metadata.name}"
        for c in core.list_namespaced_service(namespace, label_selector=selector).items
    ]
    found += [f"pod/{p['metadata']['name']}" for p in cluster.select_pods(namespace, selector)]
    return sorted(found)


def _release_gone(cluster: Cluster) -> None:
    assert _left_behind(cluster, "app.kubernetes.io/managed-by=Helm") == []
    assert cluster.select_pods(cluster.release.namespace, "") == []


def test_helm_uninstall_removes_the_webhook_first_and_pods_are_created_uninjected_right_after(
    cluster: Cluster, load: Load
) -> None:
    figures = _uninstalled(cluster, load, "helm uninstall (pre-delete hook on)")
    assert load.failed == [], load.failed[:3]
    assert figures["webhook_outlived_service_s"] < 0  # the hook closes the window: the webhook goes first
    # the namespace Helm created stays (Helm never deletes namespaces), with what is not the release's:
    # policy ConfigMaps the tests put there, and what the cluster puts in every namespace
    eventually(lambda: _release_gone(cluster), timeout=60, what="the release's objects and pods deleted")
    configurations = cluster.kube.admission.list_validating_webhook_configuration().items
    assert [c.metadata.name for c in configurations] == [], "the policy webhook went with the release"
    left = _left_behind(cluster)
    assert {"configmap/kube-root-ca.crt", "configmap/node-policies", "serviceaccount/default"} <= set(left)
    figures["left_behind"] = left


def test_tls_secret_mode_with_podgraft_certs_generate_then_uninstall_without_the_hook(
    cluster: Cluster, tmp_path: Path, load: Load
) -> None:
    """Installed again with a certificate of `podgraft certs generate` in a Secret (tls.mode=secret),
    the apiserver verifies it through the webhook's caBundle. Then `helm uninstall` without the
    pre-delete hook, for the figures: how long creations can fail while Helm deletes the Service
    and Deployment before the webhook configuration. Last, the session's install again."""
    name, namespace = cluster.release.fullname, cluster.release.namespace
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "certs",
            "generate",
            f"--service={name}",
            f"--namespace={namespace}",
            f"--out={tmp_path}",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    cluster.kubectl.run(
        "create",
        "secret",
        "tls",
        f"{name}-own-tls",
        f"--namespace={namespace}",
        f"--cert={tmp_path / 'tls.crt'}",
        f"--key={tmp_path / 'tls.key'}",
    )
    ca_bundle = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
    secret_mode = {"tls": {"mode": "secret", "secret": {"name": f"{name}-own-tls", "caBundle": ca_bundle}}}
    cluster.release.install(
        cluster.install_values | secret_mode | {"webhook": {"removeFirstOnUninstall": False}}
    )
    try:
        pods = cluster.wait_webhook()
        assert {
            v["secret"]["secretName"] for p in pods for v in p["spec"]["volumes"] if v["name"] == "tls"
        } == {f"{name}-own-tls"}
        (webhook,) = cluster.kube.webhook_configuration(name)["webhooks"]
        assert webhook["clientConfig"]["caBundle"] == ca_bundle
        probe = cluster.namespace("secret-mode")
        assert injected(eventually(lambda: cluster.served(probe), what="served in secret mode")) == [
            CHART_POLICY
        ]
        figures = _uninstalled(cluster, load, "helm uninstall (pre-delete hook off)")
        assert figures["webhook_outlived_service_s"] >= 0  # Helm's own order: the Service goes first
        assert all("failed calling webhook" in a.error for a in load.failed), {a.error for a in load.failed}
        figures["failed_errors"] = sorted({a.error.split(": ")[-1] for a in load.failed})
    finally:
        cluster.kubectl.run("delete", "secret", f"{name}-own-tls", f"--namespace={namespace}", check=False)
        if cluster.release.run(
            "status", cluster.release.name, f"--namespace={namespace}", check=False
        ).returncode:
            cluster.release.install(cluster.install_values)
        cluster.wait_webhook()
