"""The engine's view of the settings: the names it reads and writes, and the sidecar defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Names and defaults, nothing else (built from `Settings` by the server and the CLI)."""

    inject_annotation: str = "podgraft.io/inject"
    status_annotation: str = "podgraft.io/status"
    namespace_label: str = "podgraft.io/injection"
    never_namespaces: frozenset[str] = frozenset(
        ["kube-system", "kube-public", "kube-node-lease", "podgraft"]
    )
    sidecar_mode: str = "auto"  # native | classic | auto
    native_sidecars_supported: bool = True
