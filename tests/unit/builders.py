"""Small builders for the unit tier: policy documents, compiled policies, policy sets and pods."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from app.engine.policyset import CompiledPolicy, PolicySet, compile_policy
from app.policy.model import API_VERSION, KIND, parse_policy

BUSYBOX = {"name": "helper", "image": "busybox:1.36"}


def policy_doc(name: str = "p", **spec: Any) -> dict[str, Any]:
    """An InjectionPolicy document; `spec` defaults to one sidecar so that the policy is valid."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec or {"sidecars": [dict(BUSYBOX)]},
    }


def policy_yaml(name: str = "p", **spec: Any) -> str:
    return yaml.safe_dump(policy_doc(name, **spec), sort_keys=False)


def compiled(name: str = "p", *, source: str = "test.yaml", **spec: Any) -> CompiledPolicy:
    return compile_policy(parse_policy(policy_doc(name, **spec)), source=source)


def policy_set(*policies: CompiledPolicy | Iterable[CompiledPolicy]) -> PolicySet:
    flat: list[CompiledPolicy] = []
    for item in policies:
        flat.extend([item] if isinstance(item, CompiledPolicy) else item)
    return PolicySet.build(flat)


def pod(
    name: str | None = "app",
    *,
    annotations: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    generate_name: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if generate_name is not None:
        metadata["generateName"] = generate_name
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec or {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
