"""Every Podgraft knob, from `PODGRAFT_*` environment variables or CLI flags, validated at start-up."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SidecarMode = Literal["native", "classic", "auto"]
PolicySource = Literal["directory", "configmaps"]
EventsLevel = Literal["off", "warnings", "all"]

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
ALWAYS_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Podgraft configuration. Environment variables are the field names upper-cased, prefixed `PODGRAFT_`."""

    model_config = SettingsConfigDict(env_prefix="PODGRAFT_", extra="forbid", frozen=True)

    # --- server
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert_file: Path = Path("certs/tls.crt")
    tls_key_file: Path = Path("certs/tls.key")
    tls_client_ca_file: Path | None = None  # set to require and verify client certificates (mTLS)
    cert_reload_interval_seconds: float = Field(default=2.0, gt=0, le=60)
    cert_expiry_margin_seconds: int = Field(default=24 * 3600, ge=0)  # /readyz fails this long before expiry
    max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    max_concurrency: int = Field(default=64, ge=1)  # requests in flight over this get a fast 503
    max_connections: int = Field(default=1024, ge=16)  # open connections past this are refused (503)
    request_timeout_seconds: float = Field(default=8.0, gt=0)  # slow clients are cut off after this
    drain_seconds: float = Field(default=5.0, ge=0)  # on SIGTERM: not-ready, keep serving this long
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(default=1, ge=1, le=64)  # server processes sharing the port
    decision_cache_size: int = Field(default=256, ge=0)  # identical pods (replicas) decided once; 0: off
    internal_error: Literal["admit", "deny"] = "admit"  # answer to a Podgraft bug: admit uninjected, or deny

    # --- policies
    policy_source: PolicySource = "directory"
    policy_dir: Path = Path("examples/policies")
    policy_namespaces: CsvList = Field(default_factory=list)  # configmaps mode; empty: own namespace
    max_policy_bytes: int = Field(default=1024 * 1024, ge=1024)

    # --- cluster identity and names
    pod_namespace: str = Field(default="podgraft", validation_alias="POD_NAMESPACE")
    # this replica's name (the chart sets it from the downward API): the Events' reportingInstance
    pod_name: str = Field(default_factory=socket.gethostname, validation_alias="POD_NAME", min_length=1)
    kubeconfig: Path | None = None  # configmaps mode outside a cluster
    namespace_label: str = "podgraft.io/injection"
    inject_annotation: str = "podgraft.io/inject"
    status_annotation: str = "podgraft.io/status"
    policy_label: str = "podgraft.io/policy"
    excluded_namespaces: CsvList = Field(default_factory=lambda: list(ALWAYS_EXCLUDED_NAMESPACES))

    # --- audit (cluster mode)
    audit_enabled: bool = False  # watch pods; export podgraft_pods{policy,state} and /audit
    audit_refresh_seconds: float = Field(
        default=30.0, gt=0
    )  # how often policy/namespace changes re-list pods

    # --- Events on the workload (cluster mode): off | warnings (Warning Events only) | all (also `Injected`)
    events: EventsLevel = "warnings"
    events_flush_seconds: float = Field(default=5.0, gt=0, le=300)  # how often series counts are written

    # --- injection
    sidecar_mode: SidecarMode = "auto"  # default for policies that do not set spec.sidecarMode
    kubernetes_version: str = "1.29"  # what `auto` compares against (cluster mode asks the apiserver)

    @field_validator("policy_namespaces", "excluded_namespaces", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError(f"expected a version like 1.30 or v1.30.2, got {value!r}")
        return value

    @model_validator(mode="after")
    def _paths(self) -> Settings:
        if self.policy_source == "directory" and not str(self.policy_dir):
            raise ValueError("policy_dir is required when policy_source is 'directory'")
        return self

    def never_injected_namespaces(self) -> frozenset[str]:
        """Namespaces Podgraft never touches: the configured list, the system ones and its own."""
        return frozenset([*self.excluded_namespaces, *ALWAYS_EXCLUDED_NAMESPACES, self.pod_namespace])

    def watched_policy_namespaces(self) -> list[str]:
        return self.policy_namespaces or [self.pod_namespace]

    def native_sidecars_supported(self) -> bool:
        return version_at_least(self.kubernetes_version, (1, 29))


def version_at_least(version: str, minimum: tuple[int, int]) -> bool:
    """True when a Kubernetes version string (`1.30`, `v1.30.2`, `1.30+`) is at least `minimum`."""
    match = _VERSION.match(version)
    if match is None:
        return False
    return (int(match.group(1)), int(match.group(2))) >= minimum
