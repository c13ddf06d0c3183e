"""Shared by test_select.py and test_policyset.py: a policy set of every kind of rule, and `select`, which
runs `select_policies` on it (or on the policies given) with the defaults of a plain namespace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.config import EngineConfig
from app.engine.policyset import PolicySet
from app.engine.select import Selection, select_policies
from tests.unit.builders import compiled, policy_set

CONFIG = EngineConfig()

SIDECAR = {"sidecars": [{"name": "helper", "image": "busybox:1.36"}]}
MATCHERS = (
    compiled("by-annotation", match={"annotations": {"example.com/ship": "true"}}, **SIDECAR),
    compiled("by-label", match={"labels": {"app": "web"}}, **SIDECAR),
)
POLICIES = policy_set(
    compiled("plain", **SIDECAR),
    compiled("second", env=[{"name": "X", "value": "1"}]),
    MATCHERS,
    compiled(
        "scoped",
        namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
        **SIDECAR,
    ),
    compiled(
        "scoped-required",
        required=True,
        namespaceSelector={"matchLabels": {"team": "payments"}},
        **SIDECAR,
    ),
)


def select(
    subject: Mapping[str, Any],
    *,
    namespace: str = "default",
    namespace_labels: Mapping[str, str] | None = None,
    policies: PolicySet = POLICIES,
    config: EngineConfig = CONFIG,
    **kwargs: Any,
) -> Selection:
    return select_policies(
        subject,
        namespace=namespace,
        namespace_labels=namespace_labels,
        policies=policies,
        config=config,
        **kwargs,
    )


def chosen(selection: Selection) -> list[str]:
    return [p.name for p in selection.policies]
