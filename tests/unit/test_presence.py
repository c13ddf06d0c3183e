"""`injection_state`: is a policy's injection present in a pod and equal to what it renders now?

The one comparison behind idempotency (a reinvoked pod gets no patch) and `podgraft audit`: it
reads what the pod contains, never the status annotation, and it reads the pod as the apiserver
stores it (defaults filled in), so that only real differences count.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.policyset import PolicySet
from app.engine.presence import InjectionState, injection_state, plan_policy
from app.engine.sidecars import sidecar_choice
from app.engine.status import status_value
from tests.conftest import EXAMPLE_POLICIES, policies_from_dir, store_from_texts
from tests.unit.builders import compiled, pod, policy_set

STORED = Path(__file__).parent / "apiserver_stored"
CONFIG = EngineConfig()
EXAMPLES = policies_from_dir(EXAMPLE_POLICIES)
WEB = {"podgraft.io/inject": "mesh-proxy,wait-for-db", "logging.example.com/ship": "true"}


def state(
    subject: dict[str, Any], name: str, policies: PolicySet = EXAMPLES, **kwargs: Any
) -> InjectionState:
    return injection_state(subject, policies.by_name[name], namespace="shop", config=CONFIG, **kwargs)


def injected(subject: dict[str, Any], policies: PolicySet = EXAMPLES) -> dict[str, Any]:
    result = inject_pod(subject, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG)
    assert result.denial is None
    patched: dict[str, Any] = jsonpatch.apply_patch(subject, result.patch)
    return patched


def test_a_pod_without_the_injection_lists_what_is_missing() -> None:
    subject = pod(annotations=dict(WEB))
    assert state(subject, "log-shipper") == InjectionState(
        "log-shipper",
        False,
        missing=(
            "volume 'app-logs'",
            "container 'log-shipper'",
            "mount '/var/log/app' in container 'app'",
            "env 'LOG_DIR' in container 'app'",
            "annotation 'logging.example.com/shipper'",
        ),
    )


def test_every_policy_of_an_injected_pod_is_current() -> None:
    subject = injected(pod(annotations=dict(WEB), labels={"app": "web"}))
    for name in ("mesh-proxy", "wait-for-db", "log-shipper"):
        assert state(subject, name).current, name


def test_the_status_annotation_plays_no_part() -> None:
    subject = injected(pod(annotations=dict(WEB)))
    forged = pod(
        annotations={**WEB, "podgraft.io/status": subject["metadata"]["annotations"]["podgraft.io/status"]}
    )
    assert not state(forged, "mesh-proxy").current
    del subject["metadata"]["annotations"]["podgraft.io/status"]
    assert state(subject, "mesh-proxy").current


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        pytest.param(
            lambda p: p["spec"]["initContainers"][0].update(command=["sleep", "infinity"]),
            "the pod already has a container named 'mesh-proxy'",
            id="a-command-added-to-the-sidecar",
        ),
        pytest.param(
            lambda p: p["spec"]["initContainers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "the pod already has a container named 'mesh-proxy'",
            id="a-security-setting-removed",
        ),
        pytest.param(
            lambda p: p["spec"]["initContainers"][0].pop("restartPolicy"),
            "the pod already has a container named 'mesh-proxy'",
            id="the-sidecar-made-a-plain-init-container",
        ),
        pytest.param(
            lambda p: p["spec"]["containers"][0]["env"][0].update(value="http://evil:3128"),
            "container 'app' already sets env 'HTTP_PROXY' differently",
            id="the-env-changed",
        ),
        pytest.param(
            lambda p: p["metadata"]["labels"].update({"mesh.example.com/proxied": "no"}),
            "the pod already has label 'mesh.example.com/proxied'='no'",
            id="the-label-changed",
        ),
    ],
)
def test_a_changed_item_is_a_difference(tamper: Any, words: str) -> None:
    subject = injected(pod(annotations={"podgraft.io/inject": "mesh-proxy"}, labels={"app": "web"}))
    tamper(subject)
    found = state(subject, "mesh-proxy")
    assert not found.current
    assert words in found.conflicts


def test_a_removed_item_is_missing() -> None:
    subject = injected(pod(annotations=dict(WEB)))
    del subject["spec"]["containers"][0]["env"]
    assert state(subject, "mesh-proxy").missing == ("env 'HTTP_PROXY' in container 'app'",)


# --- the pod as the apiserver stores it ----------------------------------------------------------

STORED_POLICIES = store_from_texts({"policies.yaml": (STORED / "policies.yaml").read_text()}).current()


@pytest.mark.parametrize("stored", ["pod.yaml", "pod-host-network.yaml"])
def test_pods_stored_by_the_apiserver_are_current(stored: str) -> None:
    subject = yaml.safe_load((STORED / stored).read_text())
    for name, other in (("rich", "classic"), ("classic", "rich")):
        found = state(subject, name, STORED_POLICIES, alongside=[STORED_POLICIES.by_name[other]])
        assert found == InjectionState(name, True), found
    again = inject_pod(
        subject, namespace="shop", namespace_labels=None, policies=STORED_POLICIES, config=CONFIG
    )
    assert again.patch == []
    assert again.warnings == ()


def test_a_stored_pod_still_shows_a_real_difference() -> None:
    subject = yaml.safe_load((STORED / "pod.yaml").read_text())
    changed = copy.deepcopy(subject)
    proxy = next(c for c in changed["spec"]["initContainers"] if c["name"] == "rich-proxy")
    proxy["readinessProbe"]["timeoutSeconds"] = 30
    assert not state(changed, "rich", STORED_POLICIES).current
    changed = copy.deepcopy(subject)
    changed["spec"]["volumes"][0]["configMap"]["defaultMode"] = 0o777
    assert state(changed, "rich", STORED_POLICIES).conflicts == (
        "the pod already has a different volume named 'cfg'",
    )


def test_other_policies_helpers_are_not_app_containers() -> None:
    subject = yaml.safe_load((STORED / "pod.yaml").read_text())
    rich = state(subject, "rich", STORED_POLICIES)
    assert not rich.current, "alone, the classic helper looks like an app container without rich's env"
    assert rich.missing == (
        "mount '/scratch' in container 'classic-helper'",
        "mount '/host' in container 'classic-helper'",
        "env 'POD_IP' in container 'classic-helper'",
    )


# --- odds and ends --------------------------------------------------------------------------------


def test_a_render_error_is_not_current() -> None:
    broken = policy_set(compiled("broken", env=[{"name": "X", "value": "{{ pod.labels['absent'] }}"}]))
    found = state(pod(), "broken", broken)
    assert not found.current
    assert found.conflicts[0].startswith("render error: template \"{{ pod.labels['absent'] }}\"")


def test_an_already_current_plan_has_nothing_to_do() -> None:
    policy = compiled("env", env=[{"name": "A", "value": "1"}])
    subject = pod(containers=[{"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}]}])
    plan = plan_policy(subject, policy, policy.spec, config=CONFIG)
    assert plan.current
    assert (plan.edits, plan.conflicts, plan.notes) == ([], [], [])


@pytest.mark.parametrize(
    ("mode", "config", "native", "reason"),
    [
        pytest.param(
            "native", EngineConfig(native_sidecars_supported=False), True, "sidecarMode native", id="native"
        ),
        pytest.param("classic", CONFIG, False, "sidecarMode classic", id="classic"),
        pytest.param(
            "auto", CONFIG, True, "sidecarMode auto: the cluster has native sidecars", id="auto-new"
        ),
        pytest.param(
            "auto",
            EngineConfig(native_sidecars_supported=False),
            False,
            "sidecarMode auto: no native sidecars before Kubernetes 1.29",
            id="auto-old",
        ),
        pytest.param(
            None, EngineConfig(sidecar_mode="classic"), False, "default sidecarMode classic", id="default"
        ),
    ],
)
def test_sidecar_choice_says_why(mode: str | None, config: EngineConfig, native: bool, reason: str) -> None:
    spec: dict[str, Any] = {"sidecars": [{"name": "s", "image": "x"}]}
    if mode:
        spec["sidecarMode"] = mode
    choice = sidecar_choice(compiled("p", **spec), config)
    assert (choice.native, choice.reason) == (native, reason)


def test_the_status_value_written_is_what_a_second_pass_reads() -> None:
    subject = injected(pod(annotations=dict(WEB)))
    status = subject["metadata"]["annotations"]["podgraft.io/status"]
    hashes = {
        name: EXAMPLES.by_name[name].content_hash for name in ("log-shipper", "mesh-proxy", "wait-for-db")
    }
    assert status == status_value(hashes, ["log-shipper", "mesh-proxy", "wait-for-db"])


# --- after the ServiceAccount admission plugin ----------------------------------------------------


def service_account_plugin(subject: dict[str, Any]) -> dict[str, Any]:
    """What kube-apiserver's ServiceAccount plugin does to a pod, run again after the webhooks
    (plugin/pkg/admission/serviceaccount/admission.go, v1.35): the projected token volume once, and
    its mount appended to every init and app container without a mount at the token path. (The
    node tier shows the same on pods of real controllers.)"""
    patched = copy.deepcopy(subject)
    spec = patched["spec"]
    volumes = spec.setdefault("volumes", [])
    name = next((v["name"] for v in volumes if v["name"].startswith("kube-api-access-")), None)
    if name is None:
        name = "kube-api-access-q8w2z"
        volumes.append({"name": name, "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}})
    path = "/var/run/secrets/kubernetes.io/serviceaccount"
    for group in ("initContainers", "containers"):
        for container in spec.get(group, []):
            mounts = container.setdefault("volumeMounts", [])
            if not any(m["mountPath"] == path for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": path})
    return patched


def test_reinvoked_after_the_service_account_plugin_no_patch_and_current() -> None:
    """Create: the plugin mounts the app containers, Podgraft adds its helpers, the plugin runs again
    and mounts them too, and Podgraft is reinvoked (IfNeeded): nothing to do, and the audit agrees."""
    created = service_account_plugin(pod(annotations=dict(WEB), labels={"app": "web"}))
    admitted = service_account_plugin(injected(created))
    helpers = [c for c in admitted["spec"]["initContainers"] if c["name"] in ("mesh-proxy", "wait-for-db")]
    assert all(c["volumeMounts"][-1]["name"] == "kube-api-access-q8w2z" for c in helpers), helpers
    again = inject_pod(admitted, namespace="shop", namespace_labels=None, policies=EXAMPLES, config=CONFIG)
    assert (again.patch, again.warnings, again.denial) == ([], (), None)
    others = [EXAMPLES.by_name[n] for n in ("mesh-proxy", "wait-for-db", "log-shipper")]
    for name in ("mesh-proxy", "wait-for-db", "log-shipper"):
        alongside = [p for p in others if p.name != name]
        assert state(admitted, name, alongside=alongside).current, name
