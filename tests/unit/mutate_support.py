"""Helpers of the test_mutate_* modules: run `mutate_pod` on rendered policies and read what it wrote."""

from __future__ import annotations

from typing import Any

import orjson

from app.engine.config import EngineConfig
from app.engine.mutate import mutate_pod
from app.engine.policyset import CompiledPolicy

STATUS = "podgraft.io/status"
NATIVE = EngineConfig(native_sidecars_supported=True)


def mutate(
    subject: dict[str, Any],
    *policies: CompiledPolicy,
    config: EngineConfig = NATIVE,
    claims: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    rendered = [(p, p.render(subject, "shop")) for p in policies]
    return mutate_pod(subject, rendered, config=config, claims=claims or {})


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def status_of(result: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(result["metadata"]["annotations"][STATUS])
    return data


def sidecar(name: str = "proxy", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "envoy:1", **extra}
