"""Mutation of ephemeral containers (`kubectl debug`): the policies' rules apply to new containers
only, images are checked against allowedImages, and a policy of ephemeral rules alone injects
nothing at creation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.engine.mutate import image_allowed, mutate_ephemeral
from tests.unit.builders import compiled, pod
from tests.unit.mutate_support import mutate

# --- ephemeral containers -------------------------------------------------------------------------

RULES = compiled(
    "debug",
    ephemeral={
        "volumeMounts": [{"name": "logs", "mountPath": "/debug/logs", "readOnly": True}],
        "env": [{"name": "DEBUG", "value": "1"}],
        "allowedImages": ["busybox:1.*", "registry.example.com/debug/*"],
    },
)


def _debugged(*images: str, old: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    existing = [{"name": f"debugger-{i}", "image": "busybox:1.36"} for i in range(old)]
    old_pod = pod(containers=[{"name": "app", "image": "x"}], volumes=[{"name": "logs", "emptyDir": {}}])
    old_pod["spec"]["ephemeralContainers"] = existing
    new_pod = copy.deepcopy(old_pod)
    new_pod["spec"]["ephemeralContainers"] += [
        {"name": f"new-{i}", "image": image, "env": [{"name": "DEBUG", "value": "mine"}]}
        for i, image in enumerate(images)
    ]
    return old_pod, new_pod


def test_ephemeral_rules_apply_to_new_containers_only() -> None:
    old_pod, new_pod = _debugged("busybox:1.36", "registry.example.com/debug/tools:2")
    before = copy.deepcopy(new_pod)
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert new_pod == before
    assert outcome.denial is None
    earlier, *added = result["spec"]["ephemeralContainers"]
    assert earlier is new_pod["spec"]["ephemeralContainers"][0]
    for container in added:
        assert container["volumeMounts"] == [{"name": "logs", "mountPath": "/debug/logs", "readOnly": True}]
        assert container["env"] == [{"name": "DEBUG", "value": "mine"}], "the container's own env wins"
    assert result["spec"]["containers"] is new_pod["spec"]["containers"]


def test_ephemeral_disallowed_image_is_denied() -> None:
    old_pod, new_pod = _debugged("nicolaka/netshoot:latest")
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    _, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert outcome.denial == (
        "podgraft: policy 'debug' does not allow image 'nicolaka/netshoot:latest' for ephemeral container "
        "'new-0'; allowed: busybox:1.*, registry.example.com/debug/*"
    )


def test_ephemeral_mount_of_a_missing_volume_is_a_warning() -> None:
    old_pod, new_pod = _debugged("busybox:1.36")
    del new_pod["spec"]["volumes"]
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert outcome.warnings == [
        "podgraft: policy 'debug': volumeMount 'logs' names no volume of the pod; not mounted into 'new-0'"
    ]
    assert "volumeMounts" not in result["spec"]["ephemeralContainers"][1]


def test_ephemeral_old_pod_of_odd_shape() -> None:
    _, new_pod = _debugged("busybox:1.36", old=0)
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, {"spec": "not-a-spec"}, [(RULES, rules)])
    assert outcome.denial is None
    assert result["spec"]["ephemeralContainers"][0]["volumeMounts"][0]["name"] == "logs"


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        pytest.param("anything", [], True, id="no-patterns"),
        pytest.param("busybox:1.36", ["busybox:1.*"], True, id="glob"),
        pytest.param("busybox:2.0", ["busybox:1.*"], False, id="glob-other-major"),
        pytest.param(
            "registry.example.com/debug/a/b", ["registry.example.com/debug/*"], True, id="star-crosses-slash"
        ),
        pytest.param("BUSYBOX:1.36", ["busybox:1.*"], False, id="case-sensitive"),
        pytest.param("busybox:1.36", ["busybox:1.3?"], True, id="question-mark"),
    ],
)
def test_image_allowed(image: str, patterns: list[str], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def test_a_policy_with_only_ephemeral_rules_injects_nothing_at_creation_and_is_not_recorded() -> None:
    result, outcome = mutate(pod(), RULES)
    assert result == pod()
    assert outcome.warnings == []
    assert [r.state for r in outcome.results] == ["nothing"]
    assert (
        outcome.results[0].detail()
        == "nothing to inject at creation (its ephemeral rules apply to kubectl debug)"
    )
