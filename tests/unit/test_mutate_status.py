"""Mutation, the status annotation and pods that carry another version: the status lists exactly
the policies present and current, and a policy the status claims replaces its older items in place."""

from __future__ import annotations

from tests.unit.builders import compiled, pod
from tests.unit.mutate_support import STATUS, mutate, names, sidecar, status_of

# --- the status annotation ------------------------------------------------------------------------


def test_the_status_lists_exactly_the_policies_present() -> None:
    policy = compiled("new", env=[{"name": "A", "value": "1"}])
    subject = pod(
        annotations={STATUS: '{"policies":[{"name":"zeta","hash":"1111"},{"name":"new","hash":"old"}]}'}
    )
    result, outcome = mutate(subject, policy, claims={"zeta": "1111", "new": "old"})
    assert status_of(result) == {"policies": [{"name": "new", "hash": policy.content_hash}]}
    assert [r.state for r in outcome.results] == ["updated"]


def test_a_status_that_claims_a_policy_which_is_not_applied_is_removed() -> None:
    mesh = compiled("mesh", sidecars=[sidecar()])
    subject = pod(
        annotations={STATUS: '{"policies":[{"name":"mesh","hash":"x"}]}', "a": "1"},
        containers=[{"name": "app", "image": "x", "ports": [{"containerPort": 9}]}],
        ephemeralContainers=[{"name": "proxy", "image": "y"}],
    )
    result, outcome = mutate(subject, mesh, claims={"mesh": "x"})
    assert result["metadata"]["annotations"] == {"a": "1"}
    assert [r.state for r in outcome.results] == ["conflict"]


def test_a_current_pod_keeps_its_status_object() -> None:
    policy = compiled("env", env=[{"name": "A", "value": "1"}])
    first, _ = mutate(pod(), policy)
    again, outcome = mutate(first, policy, claims={"env": policy.content_hash})
    assert again["metadata"]["annotations"] is first["metadata"]["annotations"]
    assert [r.state for r in outcome.results] == ["current"]


# --- a pod that carries another version -----------------------------------------------------------


def test_a_claimed_policy_replaces_its_older_items_in_place() -> None:
    old = compiled(
        "pol",
        sidecarMode="native",
        sidecars=[sidecar(image="envoy:1")],
        volumes=[{"name": "data", "emptyDir": {}}],
        env=[{"name": "A", "value": "old"}],
        labels={"version": "1"},
    )
    new = compiled(
        "pol",
        sidecarMode="native",
        sidecars=[sidecar(image="envoy:2")],
        volumes=[{"name": "data", "emptyDir": {"medium": "Memory"}}],
        env=[{"name": "A", "value": "new"}],
        labels={"version": "2"},
    )
    own_init = {"name": "own-init", "image": "busybox"}
    subject = pod(initContainers=[own_init], containers=[{"name": "app", "image": "x"}])
    injected, _ = mutate(subject, old)
    fresh, _ = mutate(subject, new)
    updated, outcome = mutate(injected, new, claims={"pol": old.content_hash})
    assert [r.state for r in outcome.results] == ["updated"]
    assert updated == fresh
    _, outcome = mutate(injected, new)
    assert [r.state for r in outcome.results] == ["conflict"]
    assert len(outcome.warnings) == 4


def test_a_claimed_classic_sidecar_moves_when_the_mode_becomes_native() -> None:
    spec = {"sidecars": [sidecar()], "env": [{"name": "A", "value": "1"}]}
    classic = compiled("pol", sidecarMode="classic", **spec)
    native = compiled("pol", sidecarMode="native", **spec)
    injected, _ = mutate(pod(), classic)
    assert names(injected["spec"]["containers"]) == ["app", "proxy"]
    updated, _ = mutate(injected, native, claims={"pol": classic.content_hash})
    assert names(updated["spec"]["containers"]) == ["app"]
    assert updated["spec"]["initContainers"] == [{**sidecar(), "restartPolicy": "Always"}]
    assert updated["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]


def test_a_claim_never_takes_an_item_another_policy_holds() -> None:
    first = compiled("first", volumes=[{"name": "data", "emptyDir": {}}])
    second = compiled("second", volumes=[{"name": "data", "emptyDir": {"medium": "Memory"}}])
    result, outcome = mutate(pod(), first, second, claims={"second": "old"})
    assert result["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert outcome.warnings == [
        "podgraft: policy 'second' not injected: the pod already has a different volume named 'data'"
    ]
