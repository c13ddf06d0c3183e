"""The `InjectionPolicy` schema: pydantic models that reject unknown fields and name the bad one.

A policy is validated once, when it is loaded; the engine then works on the validated, frozen
model and on plain dicts produced from it (`model_dump(by_alias=True, exclude_none=True)`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.policy.messages import kind_of, validation_problems

API_VERSION = "podgraft.io/v1alpha1"
KIND = "InjectionPolicy"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class PolicyError(ValueError):
    """A policy document that cannot be used, with the location of the problem."""

    def __init__(
        self, message: str, *, policy: str | None = None, fields: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.policy = policy  # the document's metadata.name, when it has one
        self.fields = list(fields)  # (path, message) per problem, when the schema found them


def label_value_problem(value: str) -> str | None:
    """Why `value` cannot be a label value, or None when it can."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return f"{value[:80]!r} is not a valid label value (at most 63 alphanumerics, '-', '_', '.')"
    return None


def check_label_key(key: str) -> str:
    """Validate a Kubernetes label/annotation key (`[prefix/]name`)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"key {key!r}: prefix must be a DNS subdomain")
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise ValueError(f"key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'")
    return key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Open(BaseModel):
    """Kubernetes sub-objects we do not model field by field: validated by the apiserver schema."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class LabelSelectorRequirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Strict):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, alias="matchExpressions")


class Match(_Strict):
    """Rules that select a pod without the pod asking. Every given rule must fit (AND)."""

    annotations: dict[str, str] = Field(default_factory=dict)
    labels: LabelSelector = Field(default_factory=LabelSelector)

    @field_validator("labels", mode="before")
    @classmethod
    def _plain_map_is_match_labels(cls, value: object) -> object:
        # `labels: {app: web}` is shorthand for `labels: {matchLabels: {app: web}}`.
        if isinstance(value, dict) and not set(value) <= {"matchLabels", "matchExpressions"}:
            return {"matchLabels": value}
        return value

    def is_empty(self) -> bool:
        return not (self.annotations or self.labels.match_labels or self.labels.match_expressions)


class EnvVar(_Strict):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = Field(default=None, alias="valueFrom")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"env name {value!r} must match {_ENV_NAME.pattern}")
        return value


class VolumeMount(_Strict):
    name: str
    mount_path: str = Field(alias="mountPath")
    read_only: bool | None = Field(default=None, alias="readOnly")
    sub_path: str | None = Field(default=None, alias="subPath")
    sub_path_expr: str | None = Field(default=None, alias="subPathExpr")
    mount_propagation: str | None = Field(default=None, alias="mountPropagation")
    recursive_read_only: str | None = Field(default=None, alias="recursiveReadOnly")

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"mountPath {value!r} must be absolute")
        return value


class ContainerPort(_Strict):
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    host_port: int | None = Field(default=None, alias="hostPort", ge=1, le=65535)
    host_ip: str | None = Field(default=None, alias="hostIP")


class Container(_Strict):
    """core/v1 Container. Top-level fields are checked by name; nested objects by the apiserver."""

    name: str
    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = Field(default=None, alias="workingDir")
    ports: list[ContainerPort] | None = None
    env_from: list[dict[str, Any]] | None = Field(default=None, alias="envFrom")
    env: list[EnvVar] | None = None
    resources: dict[str, Any] | None = None
    resize_policy: list[dict[str, Any]] | None = Field(default=None, alias="resizePolicy")
    restart_policy: Literal["Always"] | None = Field(default=None, alias="restartPolicy")
    restart_policy_rules: list[dict[str, Any]] | None = Field(default=None, alias="restartPolicyRules")
    volume_mounts: list[VolumeMount] | None = Field(default=None, alias="volumeMounts")
    volume_devices: list[dict[str, Any]] | None = Field(default=None, alias="volumeDevices")
    liveness_probe: dict[str, Any] | None = Field(default=None, alias="livenessProbe")
    readiness_probe: dict[str, Any] | None = Field(default=None, alias="readinessProbe")
    startup_probe: dict[str, Any] | None = Field(default=None, alias="startupProbe")
    lifecycle: dict[str, Any] | None = None
    termination_message_path: str | None = Field(default=None, alias="terminationMessagePath")
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] | None = Field(
        default=None, alias="terminationMessagePolicy"
    )
    image_pull_policy: Literal["Always", "Never", "IfNotPresent"] | None = Field(
        default=None, alias="imagePullPolicy"
    )
    security_context: dict[str, Any] | None = Field(default=None, alias="securityContext")
    stdin: bool | None = None
    stdin_once: bool | None = Field(default=None, alias="stdinOnce")
    tty: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(f"container name {value!r} must be a DNS-1123 label")
        return value


class Volume(_Open):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(f"volume name {value!r} must be a DNS-1123 label")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = [key for key in (self.model_extra or {}) if key != "name"]
        if len(sources) != 1:
            raise ValueError(f"volume {self.name!r} must have exactly one source (emptyDir, configMap, ...)")
        return self


class LocalObjectReference(_Strict):
    name: str


class EphemeralRules(_Strict):
    """Rules for containers added by `kubectl debug` (the pods/ephemeralcontainers subresource)."""

    volume_mounts: list[VolumeMount] = Field(default_factory=list, alias="volumeMounts")
    env: list[EnvVar] = Field(default_factory=list)
    allowed_images: list[str] = Field(default_factory=list, alias="allowedImages")

    def is_empty(self) -> bool:
        return not (self.volume_mounts or self.env or self.allowed_images)


class PolicySpec(_Strict):
    required: bool = False  # a failure to apply denies the pod instead of admitting it without the policy
    parameters: dict[str, Any] = Field(default_factory=dict)
    match: Match | None = None
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")
    init_containers: list[Container] = Field(default_factory=list, alias="initContainers")
    init_container_position: Literal["first", "last"] = Field(default="first", alias="initContainerPosition")
    sidecars: list[Container] = Field(default_factory=list)
    sidecar_mode: Literal["native", "classic", "auto"] | None = Field(default=None, alias="sidecarMode")
    containers: list[Container] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    # Volumes of the pod that the policy's mounts may use (by name): never its own, never adopted
    # silently. A mount of a volume neither in `volumes` nor here is a conflict.
    pod_volumes: list[str] = Field(default_factory=list, alias="podVolumes")
    volume_mounts: list[VolumeMount] = Field(default_factory=list, alias="volumeMounts")
    env: list[EnvVar] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, alias="imagePullSecrets")
    ephemeral: EphemeralRules = Field(default_factory=EphemeralRules)

    @field_validator("pod_volumes")
    @classmethod
    def _pod_volume_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not DNS1123_LABEL.match(name):
                raise ValueError(f"volume name {name!r} must be a DNS-1123 label")
        if len(set(value)) != len(value):
            raise ValueError("podVolumes must be unique")
        return value

    @field_validator("annotations", "labels")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            check_label_key(key)
        return value

    @field_validator("labels")
    @classmethod
    def _label_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            problem = None if "{{" in item or "{%" in item else label_value_problem(item)
            if problem:
                raise ValueError(f"label {key!r}: {problem}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PolicySpec:
        helpers = [*self.init_containers, *self.sidecars, *self.containers]
        names = [c.name for c in helpers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"container names must be unique within a policy: {', '.join(duplicates)}")
        volumes = [v.name for v in self.volumes]
        if len(set(volumes)) != len(volumes):
            raise ValueError("volume names must be unique within a policy")
        both = sorted(set(volumes) & set(self.pod_volumes))
        if both:
            raise ValueError(
                f"volume {', '.join(both)} is both the policy's own (spec.volumes) "
                "and the pod's (spec.podVolumes)"
            )
        self._check_mounts(set(volumes) | set(self.pod_volumes))
        for container in self.sidecars:
            if container.restart_policy is not None:
                raise ValueError(
                    f"sidecar {container.name!r}: leave restartPolicy out, sidecarMode decides it"
                )
        for container in self.init_containers:
            if container.restart_policy is not None:
                raise ValueError(
                    f"initContainer {container.name!r}: restartPolicy Always makes it a sidecar; "
                    "put it under spec.sidecars"
                )
        if not (
            helpers
            or self.volumes
            or self.volume_mounts
            or self.env
            or self.annotations
            or self.labels
            or self.image_pull_secrets
            or not self.ephemeral.is_empty()
        ):
            raise ValueError(
                "the policy injects nothing: give at least one of initContainers, sidecars, "
                "containers, volumes, volumeMounts, env, annotations, labels, "
                "imagePullSecrets or ephemeral"
            )
        return self

    def _check_mounts(self, known: set[str]) -> None:
        """A mount of a volume neither the policy's nor taken from the pod fails on every pod."""
        places: list[tuple[str, list[VolumeMount]]] = [("volumeMounts", self.volume_mounts)]
        for group, alias in (
            (self.init_containers, "initContainers"),
            (self.sidecars, "sidecars"),
            (self.containers, "containers"),
        ):
            places += [(f"{alias}[{i}].volumeMounts", c.volume_mounts or []) for i, c in enumerate(group)]
        for where, mounts in places:
            for index, mount in enumerate(mounts):
                if mount.name not in known and "{{" not in mount.name:
                    raise ValueError(
                        f"{where}[{index}] mounts volume {mount.name!r}, which is neither the policy's "
                        "(spec.volumes) nor taken from the pod (spec.podVolumes)"
                    )


class Metadata(_Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(f"policy name {value!r} must be a DNS-1123 label (lower case, digits, '-')")
        return value


class InjectionPolicy(_Strict):
    api_version: Literal["podgraft.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["InjectionPolicy"]
    metadata: Metadata
    spec: PolicySpec


def parse_policy(document: object) -> InjectionPolicy:
    """Validate one decoded YAML document. Raises `PolicyError` naming policy and field."""
    if not isinstance(document, dict):
        raise PolicyError(f"expected a mapping (an InjectionPolicy document), got {kind_of(document)}")
    name = document.get("metadata", {}).get("name") if isinstance(document.get("metadata"), dict) else None
    policy = name if isinstance(name, str) else None
    where = f"policy {policy!r}: " if policy is not None else ""
    missing = [key for key in ("apiVersion", "kind") if key not in document]
    if missing:  # not a policy at all: say so, instead of every field the schema would then miss
        raise PolicyError(
            f"{where}{' and '.join(missing)} missing: a policy document starts with "
            f"apiVersion: {API_VERSION} and kind: {KIND}",
            policy=policy,
        )
    try:
        return InjectionPolicy.model_validate(document)
    except ValidationError as exc:
        fields = validation_problems(exc, InjectionPolicy)
        message = "; ".join(f"{path}: {text}" for path, text in fields)
        raise PolicyError(where + message, policy=policy, fields=fields) from None
