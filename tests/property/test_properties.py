"""Property tests: random valid pods against random valid policies.

For every example: the admission decision never raises, a patch always applies, the patched pod
validates strictly against the Kubernetes schema, the original pod is never modified, and a
second pass over the patched pod gives no patch. Whatever status annotation the pod brings (none,
or one that claims every policy with its live hash or an old one), an admitted pod contains every
required policy that selects it, and each policy its status then lists is present and current.
The example count is set by the hypothesis profile (`HYPOTHESIS_PROFILE=ci|fuzz`, see
tests/property/conftest.py).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from app.admission.decide import decide
from app.admission.review import parse_review
from app.audit.classify import audit_pod
from app.engine.config import EngineConfig
from app.engine.presence import injection_state
from app.engine.select import select_policies
from app.engine.status import read_status, status_value
from app.sources.store import PolicyStore
from tests.conftest import apply_patch, assert_valid_pod, decode_patch, make_review

NAMES = st.sampled_from(["app", "web", "proxy", "log-shipper", "helper", "init-a", "sync"])
POLICY_NAMES = ["alpha", "beta", "gamma", "delta"]
VOLUMES = st.sampled_from(["data", "logs", "cache", "shared"])
PATHS = st.sampled_from(["/data", "/var/log/app", "/cache", "/shared", "/tmp"])
PORTS = st.sampled_from([80, 8080, 9090, 15000])
ENV_NAMES = st.sampled_from(["A", "LOG_DIR", "HTTP_PROXY", "MODE"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
LABEL_VALUE = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,8}[a-z0-9])?\Z")
TEMPLATES = st.sampled_from(
    [
        "{{ pod.name }}-{{ pod.namespace }}",
        "{{ pod.generateName }}",
        "{{ pod.labels.get('app', 'none') }}",
        "{{ pod.annotations.get('example.com/select', 'unset') }}",
        "{{ pod.labels | length }}",
        "{{ pod.name }}.{{ pod.labels.app | default('x') }}",
    ]
)
CONFIG = EngineConfig(never_namespaces=frozenset(["kube-system", "podgraft"]))
STATUS = "podgraft.io/status"


def _unique(items: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    seen: dict[Any, dict[str, Any]] = {}
    for item in items:
        seen.setdefault(item[key], item)
    return list(seen.values())


@st.composite
def containers(draw: st.DrawFn, volumes: list[str], *, with_ports: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": draw(NAMES),
        "image": draw(st.sampled_from(["nginx:1.27", "busybox"])),
    }
    if with_ports and draw(st.booleans()):
        container["ports"] = [{"containerPort": draw(PORTS)}]
    if draw(st.booleans()):
        container["env"] = _unique(
            [{"name": draw(ENV_NAMES), "value": draw(TEXT)} for _ in range(draw(st.integers(0, 3)))]
        )
    if volumes and draw(st.booleans()):
        mounts = [{"name": draw(st.sampled_from(volumes)), "mountPath": draw(PATHS)} for _ in range(2)]
        container["volumeMounts"] = _unique(mounts, "mountPath")
    return container


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    volumes = draw(st.lists(VOLUMES, unique=True, max_size=3))
    all_containers = _unique(draw(st.lists(containers(volumes), min_size=1, max_size=5)))
    split = draw(st.integers(0, len(all_containers) - 1))
    init, main = all_containers[:split], all_containers[split:]
    for container in init:
        container.pop("ports", None)
        if draw(st.booleans()):
            container["restartPolicy"] = "Always"  # the pod's own native sidecar
    requested = draw(
        st.lists(st.sampled_from([*POLICY_NAMES, *POLICY_NAMES, "missing", "Not_Valid", "true"]), max_size=4)
    )
    annotations = {"podgraft.io/inject": ",".join(requested)}
    if draw(st.booleans()):
        annotations["example.com/select"] = draw(st.sampled_from(["yes", "no"]))
    if draw(st.booleans()):
        annotations["weird~key/with/slashes"] = draw(TEXT)
    if draw(st.integers(0, 9)) == 0:
        annotations["podgraft.io/inject"] = "false"
    metadata: dict[str, Any] = {"annotations": annotations, "labels": {"app": draw(LABEL_VALUE)}}
    if draw(st.booleans()):
        metadata["name"] = draw(st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z"))
    else:
        metadata["generateName"] = draw(st.sampled_from(["web-", "api-7d9f-", "x-"]))
    spec: dict[str, Any] = {"containers": main}
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    if draw(st.booleans()):
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@st.composite
def policies(draw: st.DrawFn, name: str) -> dict[str, Any]:
    own_volumes = draw(st.lists(VOLUMES, unique=True, max_size=2))
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["required"] = True
    if draw(st.booleans()):
        spec["match"] = {"annotations": {"example.com/select": "yes"}}
    if own_volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in own_volumes]
    for group in ("initContainers", "sidecars", "containers"):
        items = _unique(
            draw(st.lists(containers(own_volumes, with_ports=group != "initContainers"), max_size=2))
        )
        if items:
            spec[group] = items
    used: set[str] = set()
    for group in ("initContainers", "sidecars", "containers"):
        spec[group] = [c for c in spec.get(group, []) if not (c["name"] in used or used.add(c["name"]))]
        if not spec[group]:
            del spec[group]
    if draw(st.booleans()):
        spec["sidecarMode"] = draw(st.sampled_from(["native", "classic", "auto"]))
    if draw(st.booleans()):
        spec["initContainerPosition"] = draw(st.sampled_from(["first", "last"]))
    if own_volumes and draw(st.booleans()):
        spec["volumeMounts"] = [{"name": own_volumes[0], "mountPath": draw(PATHS)}]
    if draw(st.booleans()):
        spec["env"] = [{"name": draw(ENV_NAMES), "value": draw(TEMPLATES)}]
    if draw(st.booleans()):
        spec["labels"] = {"injected-by": name, "app": draw(LABEL_VALUE)}
    spec["annotations"] = {"example.com/policy": name}
    if draw(st.booleans()):
        spec["annotations"]["example.com/from"] = draw(TEMPLATES)
    if draw(st.booleans()):
        spec["imagePullSecrets"] = [{"name": "creds"}]
    if draw(st.booleans()):
        spec["ephemeral"] = {"env": [{"name": "DEBUG", "value": "1"}], "allowedImages": ["busybox*"]}
    return {
        "apiVersion": "podgraft.io/v1alpha1",
        "kind": "InjectionPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicyStore:
    store = PolicyStore()
    chosen = draw(st.lists(st.sampled_from(POLICY_NAMES), unique=True, min_size=1, max_size=4))
    texts = {f"{name}.json": orjson.dumps(draw(policies(name))).decode() for name in chosen}
    errors = store.replace_all(texts)  # a generated policy the schema rejects is simply not loaded
    event(f"policies loaded={len(store.current())} rejected={len(errors)}")
    return store


def _run(
    pod: dict[str, Any], store: PolicyStore, *, namespace: str = "shop", **review: Any
) -> dict[str, Any]:
    body = orjson.dumps(make_review(pod, namespace=namespace, **review))
    decision = decide(parse_review(body), policies=store.current(), config=CONFIG, namespace_labels=None)
    response: dict[str, Any] = decision.response
    assert isinstance(response["allowed"], bool)
    assert ("patchType" in response) == ("patch" in response)
    return response


@given(pod=pods(), store=policy_sets(), namespace=st.sampled_from(["shop", "shop", "team-a", "kube-system"]))
def test_injection_always_gives_a_valid_idempotent_pod(
    pod: dict[str, Any], store: PolicyStore, namespace: str
) -> None:
    original = copy.deepcopy(pod)
    response = _run(pod, store, namespace=namespace)
    assert pod == original, "the engine must not modify its input"
    ops = decode_patch(response)
    event(f"allowed={response['allowed']} patched={bool(ops)} warnings={bool(response.get('warnings'))}")
    if not response["allowed"]:
        assert response["status"]["message"].startswith("podgraft: ")
        assert not ops
        return
    patched = apply_patch(pod, ops)
    assert_valid_pod(patched)
    again = _run(patched, store, namespace=namespace)
    assert decode_patch(again) == [], "a second pass must not patch"


@given(pod=pods(), store=policy_sets(), forge=st.sampled_from([None, "live", "old"]))
def test_a_pod_never_evades_a_required_policy_and_the_status_never_lies(
    pod: dict[str, Any], store: PolicyStore, forge: str | None
) -> None:
    policies = store.current()
    if forge:
        claims = {n: p.content_hash if forge == "live" else "0" * 16 for n, p in policies.by_name.items()}
        pod["metadata"]["annotations"][STATUS] = status_value(claims, [])
    response = _run(pod, store)
    event(f"forge={forge} allowed={response['allowed']}")
    if not response["allowed"]:
        return
    patched = apply_patch(pod, decode_patch(response))
    selection = select_policies(
        pod, namespace="shop", namespace_labels=None, policies=policies, config=CONFIG
    )
    if selection.skip_reason is not None:  # opted out: not touched, whatever it says of itself
        assert patched == pod
        return
    chosen = selection.policies
    recorded = read_status(patched["metadata"].get("annotations") or {}, STATUS)
    assert {p.name for p in chosen if p.required} <= set(recorded)
    for name in recorded:
        others = [p for p in chosen if p.name != name]
        state = injection_state(
            patched, policies.by_name[name], namespace="shop", config=CONFIG, alongside=others
        )
        assert state.current, state
        assert recorded[name] == policies.by_name[name].content_hash


GENERATED = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's generateName alphabet


@st.composite
def stored_changes(draw: st.DrawFn) -> list[tuple[str, str, str | None]]:
    """What changes a pod's labels and annotations after admission: later webhooks, CNI plugins,
    controllers, `kubectl label|annotate` (field, key, new value or None to remove)."""
    keys = st.sampled_from(
        [
            ("labels", "app"),
            ("labels", "team"),
            ("annotations", "example.com/select"),
            ("annotations", "cni/ip"),
        ]
    )
    return [(*draw(keys), draw(st.one_of(st.none(), LABEL_VALUE))) for _ in range(draw(st.integers(0, 3)))]


@given(
    pod=pods(),
    store=policy_sets(),
    suffix=st.text(alphabet=GENERATED, min_size=5, max_size=5),
    changes=stored_changes(),
)
def test_a_controller_made_pod_audited_as_stored_is_current(
    pod: dict[str, Any], store: PolicyStore, suffix: str, changes: list[tuple[str, str, str | None]]
) -> None:
    """The webhook's result for a pod a controller created (no name, `generateName`), stored as the
    apiserver stores it (named from the prefix, the API token mounted into every container) and
    changed later, audits right away as `current` for every policy its status records."""
    metadata = pod["metadata"]
    metadata.pop("name", None)
    metadata["generateName"] = metadata.get("generateName") or "web-"
    response = _run(pod, store)
    if not response["allowed"]:
        return
    stored = apply_patch(pod, decode_patch(response))
    stored["metadata"]["name"] = stored["metadata"]["generateName"][:58] + suffix
    stored["metadata"]["namespace"] = "shop"
    for group in ("initContainers", "containers"):
        for container in stored["spec"].get(group, []):
            mount = {"name": "kube-api-access-" + suffix, "readOnly": True, "mountPath": TOKEN_PATH}
            container.setdefault("volumeMounts", []).append(mount)
    recorded = read_status(stored["metadata"].get("annotations") or {}, STATUS)
    policies = store.current()
    injected = {  # a label or annotation a policy sets: changing it is a real difference (unit tier)
        (field, key)
        for name in recorded
        for field in ("labels", "annotations")
        for key in getattr(policies.by_name[name].model.spec, field)
    }
    for field, key, value in changes:
        values = stored["metadata"].setdefault(field, {})
        if (field, key) in injected:
            continue
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    result = audit_pod(stored, namespace_labels=None, policies=policies, config=CONFIG)
    states = {s.policy: (s.state, s.detail) for s in result.policies}
    event(f"recorded={len(recorded)} changes={len(changes)}")
    for name in recorded:
        assert states[name] == ("current", ""), states
    assert not any(state == "stale" for state, _ in states.values()), states


TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@given(pod=pods(), store=policy_sets(), image=st.sampled_from(["busybox:1.36", "evil:latest"]))
def test_ephemeral_updates_touch_only_new_ephemeral_containers(
    pod: dict[str, Any], store: PolicyStore, image: str
) -> None:
    old = copy.deepcopy(pod)
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger-zz", "image": image}]
    response = _run(pod, store, operation="UPDATE", sub_resource="ephemeralcontainers", old=old)
    ops = decode_patch(response)
    assert all(op["path"].startswith("/spec/ephemeralContainers") for op in ops)
    if response["allowed"]:
        assert_valid_pod(apply_patch(pod, ops))
    else:
        assert "evil:latest" in response["status"]["message"]


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_other_operations_are_allowed_untouched(operation: str) -> None:
    response = _run(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}, PolicyStore(), operation=operation
    )
    assert response == {"uid": response["uid"], "allowed": True}
