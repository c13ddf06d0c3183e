"""The audit judges a pod by what the webhook saw when it admitted it (issue 15).

A controller-made pod reaches the webhook with only `generateName`; the apiserver names it after the
webhooks ran, and labels and annotations change later (other webhooks, CNI plugins, controllers,
`kubectl label`). A policy whose templates read those values must still audit as `current` right
after injection, and as `stale` only when the policy changed, naming what changed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.audit.classify import PodAudit, audit_pod
from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.policyset import PolicySet
from tests.conftest import EXAMPLE_POLICIES, policies_from_dir
from tests.unit.builders import compiled, pod, policy_set
from tests.unit.test_presence import service_account_plugin

CONFIG = EngineConfig()
OPTED_IN = {"podgraft.io/injection": "enabled"}
STATUS = "podgraft.io/status"
EXAMPLES = policies_from_dir(EXAMPLE_POLICIES)


def reader(image: str = "busybox:1.36", memory: str = "64Mi", level: str = "info") -> Any:
    """Reads every value that changes after admission, in env, args and annotations."""
    return compiled(
        "reader",
        sidecars=[
            {
                "name": "reader",
                "image": image,
                "args": ["--node={{ pod.name }}", "--set={{ pod.generateName }}"],
                "env": [
                    {"name": "APP", "value": "{{ pod.labels.get('app', 'none') }}"},
                    {"name": "TRACK", "value": "{{ pod.annotations.get('example.com/track', 'stable') }}"},
                    {"name": "LEVEL", "value": level},
                ],
                "resources": {"limits": {"memory": memory}},
            }
        ],
        annotations={"example.com/owner": "{{ pod.labels.team | default('platform') }}"},
    )


LIVE = policy_set(reader())


def controller_pod(prefix: str = "web-7d9f8-", **labels: str) -> dict[str, Any]:
    """A pod as a ReplicaSet controller sends it: no name, `generateName`, an owner."""
    item = pod(
        None,
        generate_name=prefix,
        annotations={"podgraft.io/inject": "reader"},
        labels={"app": "web", "pod-template-hash": "7d9f8", **labels},
    )
    item["metadata"]["namespace"] = "shop"
    item["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": prefix.rstrip("-"),
            "uid": "u",
            "controller": True,
        }
    ]
    return item


def admitted(item: dict[str, Any], policies: PolicySet = LIVE) -> dict[str, Any]:
    """Through the webhook, then stored: named from generateName and the ServiceAccount plugin run."""
    result = inject_pod(item, namespace="shop", namespace_labels=OPTED_IN, policies=policies, config=CONFIG)
    assert result.denial is None, result.warnings
    assert result.mutated is not None
    stored = service_account_plugin(copy.deepcopy(dict(result.mutated)))
    stored["metadata"]["name"] = stored["metadata"]["generateName"] + "k2x9q"
    return stored


def audit(item: dict[str, Any], policies: PolicySet = LIVE) -> PodAudit:
    return audit_pod(item, namespace_labels=OPTED_IN, policies=policies, config=CONFIG)


def only(result: PodAudit) -> tuple[str, str]:
    [state] = result.policies
    return state.state, state.detail


def test_a_controller_made_pod_is_current_right_after_injection() -> None:
    stored = admitted(controller_pod())
    reader_container = next(c for c in stored["spec"]["initContainers"] if c["name"] == "reader")
    assert reader_container["args"] == ["--node=web-7d9f8", "--set=web-7d9f8-"], "rendered with no name yet"
    assert only(audit(stored)) == ("current", "")


def test_the_example_policies_that_read_the_pods_name_are_current_too() -> None:
    """The bug of issue 15 as a user saw it: `web-7d9f8-k2x9q ... log-shipper stale`."""
    item = controller_pod()
    item["metadata"]["annotations"] = {"podgraft.io/inject": "mesh-proxy,log-shipper"}
    stored = admitted(item, EXAMPLES)
    states = {s.policy: (s.state, s.detail) for s in audit(stored, EXAMPLES).policies}
    assert states == {"mesh-proxy": ("current", ""), "log-shipper": ("current", "")}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m["labels"].update(app="api"), id="label-read-by-env-changed"),
        pytest.param(lambda m: m["labels"].update(team="payments"), id="label-read-by-annotation-added"),
        pytest.param(lambda m: m["labels"].pop("app"), id="label-removed"),
        pytest.param(
            lambda m: m["annotations"].update({"example.com/track": "canary"}), id="annotation-added"
        ),
        pytest.param(lambda m: m.update(generateName="other-"), id="generate-name-changed"),
    ],
)
def test_values_changed_after_admission_do_not_make_it_stale(change: Any) -> None:
    stored = admitted(controller_pod())
    change(stored["metadata"])
    assert only(audit(stored)) == ("current", "")


def test_the_status_records_what_the_templates_read_at_admission() -> None:
    stored = admitted(controller_pod())
    inputs = json.loads(stored["metadata"]["annotations"][STATUS])["inputs"]
    assert inputs == {
        "name": "",
        "generateName": "web-7d9f8-",
        "labels": {"app": "web", "team": None},
        "annotations": {"example.com/track": None},
    }


def test_a_reinvocation_changes_nothing_and_stays_current() -> None:
    """The apiserver calls the webhook again (IfNeeded) after its plugins mounted the token into
    the injected sidecar: no patch, and the status (with its inputs) as the first pass wrote it."""
    first = inject_pod(
        controller_pod(), namespace="shop", namespace_labels=OPTED_IN, policies=LIVE, config=CONFIG
    )
    assert first.mutated is not None
    reinvoked = service_account_plugin(copy.deepcopy(dict(first.mutated)))
    again = inject_pod(reinvoked, namespace="shop", namespace_labels=OPTED_IN, policies=LIVE, config=CONFIG)
    assert (again.patch, again.warnings) == ([], ())
    reinvoked["metadata"]["name"] = "web-7d9f8-k2x9q"
    assert only(audit(reinvoked)) == ("current", "")


def test_a_policy_that_sets_a_label_it_reads_keeps_its_first_inputs_on_reinvocation() -> None:
    policies = policy_set(compiled("team", labels={"team": "{{ pod.labels.get('team', 'platform') }}"}))
    item = pod("app", annotations={"podgraft.io/inject": "team"})
    first = inject_pod(item, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG)
    assert first.mutated is not None
    again = inject_pod(
        first.mutated, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG
    )
    assert again.patch == []
    status = json.loads(first.mutated["metadata"]["annotations"][STATUS])
    assert status["inputs"] == {"labels": {"team": None}}


@pytest.mark.parametrize(
    ("live", "words"),
    [
        pytest.param(reader(image="busybox:1.37"), "reader image busybox:1.36 -> busybox:1.37", id="image"),
        pytest.param(reader(memory="128Mi"), "reader resources.limits.memory 64Mi -> 128Mi", id="resources"),
        pytest.param(reader(level="debug"), "reader env[LEVEL].value info -> debug", id="env-value"),
    ],
)
def test_a_policy_change_makes_it_stale_naming_what_changed(live: Any, words: str) -> None:
    stored = admitted(controller_pod())
    stored["metadata"]["labels"]["app"] = "relabelled"  # and a value read at admission changed too
    state, detail = only(audit(stored, policy_set(live)))
    assert state == "stale"
    assert words in detail, detail
    assert "already has" not in detail


def test_a_changed_app_env_value_and_volume_are_named() -> None:
    def shipper(directory: str, medium: str | None) -> Any:
        volume: dict[str, Any] = {"name": "logs", "emptyDir": {"medium": medium} if medium else {}}
        return compiled(
            "shipper",
            volumes=[volume],
            volumeMounts=[{"name": "logs", "mountPath": "/logs"}],
            env=[{"name": "LOG_DIR", "value": directory}],
        )

    item = controller_pod()
    item["metadata"]["annotations"] = {"podgraft.io/inject": "shipper"}
    stored = admitted(item, policy_set(shipper("/logs", None)))
    state, detail = only(audit(stored, policy_set(shipper("/var/log", "Memory"))))
    assert state == "stale"
    assert 'volume \'logs\': emptyDir {} -> {"medium":"Memory"}' in detail, detail
    assert "env 'LOG_DIR' in container 'app': value /logs -> /var/log" in detail, detail


def test_a_pod_from_an_older_podgraft_without_inputs_is_judged_with_no_name() -> None:
    """Pods admitted before the status recorded inputs: a name made from generateName by the
    apiserver (prefix + 5 of its characters) was none at admission."""
    stored = admitted(controller_pod())
    status = json.loads(stored["metadata"]["annotations"][STATUS])
    del status["inputs"]
    stored["metadata"]["annotations"][STATUS] = json.dumps(status)
    assert only(audit(stored)) == ("current", "")
    stored["metadata"]["name"] = "web-7d9f8-hand-named"  # not a generated name: taken as it is
    assert only(audit(stored))[0] == "stale"


def test_a_long_annotation_changed_since_admission_is_unknown_not_stale() -> None:
    policies = policy_set(
        compiled(
            "blob", env=[{"name": "CONFIG", "value": "{{ pod.annotations.get('example.com/config', '') }}"}]
        )
    )
    item = controller_pod()
    item["metadata"]["annotations"] = {"podgraft.io/inject": "blob", "example.com/config": "x" * 300}
    stored = admitted(item, policies)
    inputs = json.loads(stored["metadata"]["annotations"][STATUS])["inputs"]
    assert list(inputs["annotations"]["example.com/config"]) == ["digest"]
    assert only(audit(stored, policies)) == ("current", "")
    stored["metadata"]["annotations"]["example.com/config"] = "y" * 300
    state, detail = only(audit(stored, policies))
    assert state == "unknown"
    assert "annotation 'example.com/config'" in detail


def test_the_status_annotation_is_never_a_template_input() -> None:
    policies = policy_set(compiled("count", env=[{"name": "N", "value": "{{ pod.annotations | length }}"}]))
    item = pod("app", annotations={"podgraft.io/inject": "count"})
    first = inject_pod(item, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG)
    assert first.mutated is not None
    assert first.mutated["spec"]["containers"][0]["env"] == [{"name": "N", "value": "1"}]
    again = inject_pod(
        first.mutated, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG
    )
    assert again.patch == [], "the status written by the first pass changes nothing"
    stored = copy.deepcopy(dict(first.mutated))
    stored["metadata"]["namespace"] = "shop"
    assert only(audit(stored, policies)) == ("current", "")


def test_reinvoked_after_a_later_webhook_changed_a_label_it_reads_renders_again() -> None:
    """Another webhook, called after Podgraft, adds a label a template reads; the apiserver calls
    Podgraft again (IfNeeded): the helper is rendered for the new value, the status records it."""
    first = inject_pod(
        controller_pod(), namespace="shop", namespace_labels=OPTED_IN, policies=LIVE, config=CONFIG
    )
    assert first.mutated is not None
    relabelled = copy.deepcopy(dict(first.mutated))
    relabelled["metadata"]["labels"]["app"] = "web-canary"
    again = inject_pod(relabelled, namespace="shop", namespace_labels=OPTED_IN, policies=LIVE, config=CONFIG)
    assert again.warnings == (
        "podgraft: policy 'reader': the pod holds it rendered for other values of the pod (a label or "
        "annotation its templates read changed since); rendered again",
    )
    assert again.mutated is not None
    stored = copy.deepcopy(dict(again.mutated))
    assert json.loads(stored["metadata"]["annotations"][STATUS])["inputs"]["labels"]["app"] == "web-canary"
    stored["metadata"]["name"] = "web-7d9f8-bcdfg"
    assert only(audit(stored)) == ("current", "")
