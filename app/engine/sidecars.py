"""Native or classic: how a policy's sidecars are injected, and why (pure, cached per setting)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from app.engine.config import EngineConfig
from app.engine.policyset import CompiledPolicy


@dataclass(frozen=True, slots=True)
class SidecarChoice:
    """Whether a policy's sidecars are native (init containers that keep running) or classic, and why."""

    native: bool
    reason: str
    explicit: bool = False  # the mode was set (native or classic), not resolved from `auto`


def sidecar_choice(policy: CompiledPolicy, config: EngineConfig) -> SidecarChoice:
    """The policy's `sidecarMode`, or the webhook's default; `auto` is native when the cluster has them."""
    return _sidecar_choice(
        policy.model.spec.sidecar_mode, config.sidecar_mode, config.native_sidecars_supported
    )


@functools.cache
def _sidecar_choice(mode: str | None, default: str, supported: bool) -> SidecarChoice:
    source = "sidecarMode" if mode is not None else "default sidecarMode"
    mode = mode or default
    if mode != "auto":
        return SidecarChoice(mode == "native", f"{source} {mode}", explicit=True)
    if supported:
        return SidecarChoice(True, f"{source} auto: the cluster has native sidecars")
    return SidecarChoice(False, f"{source} auto: no native sidecars before Kubernetes 1.29")
