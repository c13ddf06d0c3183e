"""What the rollout and explain unit tests share: the objects the node tier's apiserver and controllers
returned (tests/unit/rollout_stored/, written by tests/node/capture_rollout.py), the captured policy
in both versions, and the audit's judge over them."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from app.audit.classify import PolicyState, audit_pod
from app.engine.config import EngineConfig
from app.engine.policyset import PolicySet
from app.sources.store import PolicyStore

STORED = Path(__file__).parent / "rollout_stored"
CONFIG = EngineConfig()


@functools.cache
def _load(name: str) -> Any:
    return yaml.safe_load((STORED / name).read_text())


def stored(name: str) -> Any:
    """A captured file (a fresh copy: tests may edit it)."""
    return copy.deepcopy(_load(name))


@functools.cache
def policies(version: str) -> PolicySet:
    """The captured `stamp` policy, "v1" (what the pods were injected with) or "v2" (edited)."""
    store = PolicyStore(max_bytes=1 << 20)
    errors = store.replace_all(stored(f"policies-{version}.yaml"))
    assert not errors, errors
    return store.current()


def namespace_labels() -> dict[str, str]:
    return dict(stored("webhooks.yaml")["namespace"]["metadata"]["labels"])


def judge(version: str) -> Any:
    """The audit's judge (`audit_pod`) with the policies of `version`, as `podgraft rollout` builds it."""

    def judging(pod: Mapping[str, Any]) -> list[PolicyState]:
        audit = audit_pod(pod, namespace_labels=namespace_labels(), policies=policies(version), config=CONFIG)
        return list(audit.policies)

    return judging
