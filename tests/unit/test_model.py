"""The InjectionPolicy schema, what it accepts: the labels shorthand, templated values checked after
rendering, one injection of any kind is enough, defaults and aliases, frozen models, label keys, and
podVolumes. Its rejections are in test_model_errors.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.policy.model import InjectionPolicy, check_label_key, parse_policy
from tests.unit.builders import BUSYBOX, compiled, policy_doc

C = BUSYBOX


def test_labels_shorthand_equals_match_labels() -> None:
    short = parse_policy(policy_doc(sidecars=[C], match={"labels": {"app": "web"}}))
    full = parse_policy(policy_doc(sidecars=[C], match={"labels": {"matchLabels": {"app": "web"}}}))
    assert short.spec.match == full.spec.match
    assert short.spec.match is not None
    assert short.spec.match.labels.match_labels == {"app": "web"}
    assert short.spec.match.labels.match_expressions == []


def test_templated_label_value_is_checked_after_rendering_not_at_load() -> None:
    policy = parse_policy(policy_doc(labels={"app": "{{ pod.labels.app }}"}))
    assert policy.spec.labels == {"app": "{{ pod.labels.app }}"}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"initContainers": [C]}, id="init-container"),
        pytest.param({"volumes": [{"name": "data", "emptyDir": {}}]}, id="volume"),
        pytest.param({"env": [{"name": "X", "value": "1"}]}, id="env"),
        pytest.param({"annotations": {"example.com/a": "1"}}, id="annotation"),
        pytest.param({"labels": {"a": "1"}}, id="label"),
        pytest.param({"imagePullSecrets": [{"name": "creds"}]}, id="pull-secret"),
        pytest.param({"ephemeral": {"allowedImages": ["busybox:*"]}}, id="ephemeral-only"),
    ],
)
def test_one_injection_is_enough(spec: dict[str, Any]) -> None:
    policy = parse_policy(policy_doc(**spec))
    assert isinstance(policy, InjectionPolicy)
    assert policy.metadata.name == "p"


def test_defaults_and_aliases() -> None:
    policy = parse_policy(
        policy_doc(
            initContainers=[{**C, "volumeMounts": [{"name": "d", "mountPath": "/d", "readOnly": True}]}],
            volumes=[{"name": "d", "emptyDir": {"medium": "Memory"}}],
        )
    )
    assert policy.spec.required is False
    assert policy.spec.init_container_position == "first"
    assert policy.spec.sidecar_mode is None
    dumped = policy.spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["initContainers"][0]["volumeMounts"] == [{"name": "d", "mountPath": "/d", "readOnly": True}]
    # Volumes are open objects: their source survives unchanged for the apiserver to validate.
    assert dumped["volumes"] == [{"name": "d", "emptyDir": {"medium": "Memory"}}]


def test_policy_is_frozen() -> None:
    policy = parse_policy(policy_doc())
    with pytest.raises(ValueError, match="frozen"):
        policy.metadata.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        pytest.param("app", True, id="plain"),
        pytest.param("example.com/app", True, id="prefixed"),
        pytest.param("a.b-c_d", True, id="punctuation-inside"),
        pytest.param("x" * 63, True, id="63-chars"),
        pytest.param("x" * 64, False, id="64-chars"),
        pytest.param("Example.com/app", False, id="upper-case-prefix"),
        pytest.param("example.com/", False, id="empty-name"),
        pytest.param("-app", False, id="leading-dash"),
        pytest.param("a/b/c", False, id="two-slashes"),
    ],
)
def test_check_label_key(key: str, ok: bool) -> None:
    if ok:
        assert check_label_key(key) == key
    else:
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            check_label_key(key)


def test_pod_volumes_are_optional_and_do_not_change_the_hash_of_policies_without_them() -> None:
    plain = compiled("p", sidecars=[C])
    assert parse_policy(policy_doc(sidecars=[C])).spec.pod_volumes == []
    assert plain.content_hash == compiled("p", sidecars=[C], podVolumes=[]).content_hash
    assert plain.content_hash != compiled("p", sidecars=[C], podVolumes=["data"]).content_hash
