"""The engine's view of the settings (names and defaults, nothing else), for every caller of the engine."""

from __future__ import annotations

from app.engine.config import EngineConfig
from app.settings import Settings


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        inject_annotation=settings.inject_annotation,
        status_annotation=settings.status_annotation,
        namespace_label=settings.namespace_label,
        never_namespaces=settings.never_injected_namespaces(),
        sidecar_mode=settings.sidecar_mode,
        native_sidecars_supported=settings.native_sidecars_supported(),
    )
