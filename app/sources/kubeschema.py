"""What a policy injects, checked against the Kubernetes schema of the cluster's version.

The containers, volumes, env, mounts and pull secrets of a policy are Kubernetes objects that the
apiserver validates on every pod. Each shipped `schemas/v<minor>.json` is the strict schema of
those objects for one Kubernetes minor (generated from the pinned kubernetes-validate package by
hack/kubeschema/generate.py): unknown fields, wrong types and missing required fields are found by
`jsonschema`. What the schema cannot say (it types a quantity and an int-or-string as "a string or a
number", and has no enums), the value checks below say as the apiserver's validation does
(k8s.io/kubernetes/pkg/apis/core/validation): quantities, resource names, ports and port names,
enum values, one handler per probe, one source per `valueFrom`, downward API field paths.
Template strings are not checked for their value: only the pod decides it.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, ValidationError

from app.policy.messages import kind_of

SCHEMAS = Path(__file__).parent / "schemas"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")

# Where a policy spec holds Kubernetes objects, and which root of the schema each one is.
PLACES = (
    (("initContainers",), "Container"),
    (("sidecars",), "Container"),
    (("containers",), "Container"),
    (("volumes",), "Volume"),
    (("volumeMounts",), "VolumeMount"),
    (("env",), "EnvVar"),
    (("imagePullSecrets",), "LocalObjectReference"),
    (("ephemeral", "volumeMounts"), "VolumeMount"),
    (("ephemeral", "env"), "EnvVar"),
)

FieldProblem = tuple[str, str]  # (path in the document, what is wrong there)


# --- the shipped schemas --------------------------------------------------------------------------


def _minor(version: str) -> tuple[int, int] | None:
    match = _VERSION.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


@functools.cache
def shipped_versions() -> tuple[str, ...]:
    """The Kubernetes minors a schema is shipped for, oldest first (`1.29`, ...)."""
    found = [path.stem.removeprefix("v") for path in SCHEMAS.glob("v*.json")]
    return tuple(sorted(found, key=lambda v: _minor(v) or (0, 0)))


def schema_version(kubernetes_version: str) -> tuple[str, str | None]:
    """The shipped minor to check against for a cluster version (`v1.35.4` -> `1.35`), and a note
    when it is not the cluster's own (a cluster newer or older than every shipped schema)."""
    versions = shipped_versions()
    wanted = _minor(kubernetes_version)
    if wanted is None:
        raise ValueError(f"expected a Kubernetes version like 1.30 or v1.30.2, got {kubernetes_version!r}")
    minor = f"{wanted[0]}.{wanted[1]}"
    if minor in versions:
        return minor, None
    nearest = versions[-1] if wanted > (_minor(versions[-1]) or (0, 0)) else versions[0]
    return nearest, (
        f"no schema shipped for Kubernetes {minor} (Podgraft ships {versions[0]} to {versions[-1]}); "
        f"checking against {nearest}"
    )


@dataclass(frozen=True, slots=True)
class _Schema:
    minor: str
    definitions: Mapping[str, Any]  # by full name (io.k8s.api.core.v1.Container)
    validators: Mapping[str, Draft202012Validator]  # by root (Container)
    names: Mapping[int, str]  # id(definition) -> short name, to name the object an error is in


@functools.cache
def _load(minor: str) -> _Schema:
    document = orjson.loads((SCHEMAS / f"v{minor}.json").read_bytes())
    definitions = document["$defs"]
    validators = {
        root: Draft202012Validator({"$ref": f"#/$defs/{full}", "$defs": definitions})
        for root, full in document["roots"].items()
    }
    names = {id(schema): full.rsplit(".", 1)[-1] for full, schema in definitions.items()}
    return _Schema(minor, definitions, validators, names)


def _introduced(definition: str, field: str, after: str) -> str | None:
    """The first shipped minor after `after` whose `definition` has `field`, if any."""
    later = [v for v in shipped_versions() if (_minor(v) or (0, 0)) > (_minor(after) or (0, 0))]
    for minor in later:
        schema = _load(minor)
        full = next((name for name in schema.definitions if name.rsplit(".", 1)[-1] == definition), None)
        if full is not None and field in schema.definitions[full].get("properties", {}):
            return minor
    return None


# --- the check ------------------------------------------------------------------------------------


def check_spec(spec: Mapping[str, Any], *, kubernetes_version: str) -> list[FieldProblem]:
    """Every problem the apiserver of `kubernetes_version` would find in the Kubernetes objects a
    policy spec injects (in the policy's words: `spec.sidecars[0].livenessProbe.periodSecondz`)."""
    minor, _note = schema_version(kubernetes_version)
    schema = _load(minor)
    problems: list[FieldProblem] = []
    for keys, root in PLACES:
        items: Any = spec
        for key in keys:
            items = items.get(key) if isinstance(items, Mapping) else None
        if not isinstance(items, list):
            continue
        base = "spec." + ".".join(keys)
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                continue  # the policy schema names it
            where = f"{base}[{index}]"
            for error in schema.validators[root].iter_errors(item):
                problems.extend(_describe(error, where, schema))
            definition = schema.definitions[f"io.k8s.api.core.v1.{root}"]
            problems.extend(_values(item, definition, where, schema, (root, "")))
    return list(dict.fromkeys(problems))  # the schema and the value checks may name one place twice


def _path(base: str, parts: Iterator[Any]) -> str:
    for part in parts:
        base += f"[{part}]" if isinstance(part, int) else f".{part}"
    return base


_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
}


def _describe(error: ValidationError, base: str, schema: _Schema) -> list[FieldProblem]:
    where = _path(base, iter(error.absolute_path))
    instance, rule = error.instance, error.validator
    at: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    expected: Any = error.validator_value
    if rule == "additionalProperties" and isinstance(instance, Mapping):
        return [
            _unknown(str(field), where, at, schema)
            for field in instance
            if field not in at.get("properties", {})
        ]
    if rule == "type":
        wanted = [_TYPES.get(t, t) for t in expected if t != "null"]
        return [(where, f"expected {' or '.join(wanted)}, got {kind_of(instance)}")]
    if rule == "oneOf" and at.get("x-podgraft") == "quantity":
        return [
            (
                where,
                f"expected a quantity (a string like 512Mi or 250m, or a number), got {kind_of(instance)}",
            )
        ]
    if rule == "oneOf" and at.get("x-podgraft") == "int-or-string":
        return [(where, f"expected a port number or name, got {kind_of(instance)}")]
    if rule == "required" and isinstance(instance, Mapping):
        return [(f"{where}.{field}", "field required") for field in expected if field not in instance]
    return [(where, error.message)]


def _unknown(field: str, where: str, at: Mapping[str, Any], schema: _Schema) -> FieldProblem:
    """An unknown field: the near miss, or the later Kubernetes minor that has it."""
    known = list(at.get("properties", {}))
    definition = schema.names.get(id(at), "")
    since = _introduced(definition, field, schema.minor) if definition else None
    message = f"unknown field in Kubernetes {schema.minor}"
    if since is not None:
        return (f"{where}.{field}", f"{message} (added in {since})")
    return (f"{where}.{field}", message + _near(field, known, cutoff=0.75))


# --- values the schema cannot check -----------------------------------------------------------------


def _near(value: str, known: Collection[str], cutoff: float = 0.6) -> str:
    """`; did you mean 'x'?` for the closest of `known`, or nothing."""
    lower = {item.lower(): item for item in known}  # `http` is a near miss of `HTTP`
    close = difflib.get_close_matches(value.lower(), list(lower), n=1, cutoff=cutoff)
    return f"; did you mean {lower[close[0]]!r}?" if close else ""


def _is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18), ("", 0))},
}


def quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity's value (`512Mi`, `250m`, `1e3`, 2), None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if not isinstance(value, str):
        return Decimal(str(value))
    match = _QUANTITY.match(value)
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, OverflowError):
        return None


_PORT_NAME = re.compile(r"^[-a-z0-9]{1,15}$")


def port_name_problem(name: str) -> str | None:
    """Why `name` is not an IANA service name (a port name), or None."""
    if not _PORT_NAME.match(name) or "--" in name or name.startswith("-") or name.endswith("-"):
        return f"{name!r} is not a valid port name (1-15 lower-case alphanumerics or '-', not at either end)"
    if not re.search(r"[a-z]", name):
        return f"{name!r} is not a valid port name (it must contain a letter)"
    return None


def _port(value: object, *, names: bool) -> str | None:
    if isinstance(value, bool):
        return None  # a type error, reported by the schema
    if isinstance(value, int):
        return None if 1 <= value <= 65535 else f"port {value} is not between 1 and 65535"
    if isinstance(value, str) and names and not _is_template(value):
        return port_name_problem(value)
    return None


# Values of string fields the apiserver accepts (the `+enum` types of core/v1, and the few others it
# checks the same way); a field not listed here takes any string.
ENUMS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("Container", "imagePullPolicy"): ("Always", "IfNotPresent", "Never"),
    ("Container", "terminationMessagePolicy"): ("File", "FallbackToLogsOnError"),
    ("ContainerPort", "protocol"): ("TCP", "UDP", "SCTP"),
    ("ContainerResizePolicy", "resourceName"): ("cpu", "memory"),
    ("ContainerResizePolicy", "restartPolicy"): ("NotRequired", "RestartContainer"),
    ("VolumeMount", "mountPropagation"): ("None", "HostToContainer", "Bidirectional"),
    ("VolumeMount", "recursiveReadOnly"): ("Disabled", "IfPossible", "Enabled"),
    ("HostPathVolumeSource", "type"): (
        "",
        "DirectoryOrCreate",
        "Directory",
        "FileOrCreate",
        "File",
        "Socket",
        "CharDevice",
        "BlockDevice",
    ),
    ("HTTPGetAction", "scheme"): ("HTTP", "HTTPS"),
    ("SecurityContext", "procMount"): ("Default", "Unmasked"),
    ("SeccompProfile", "type"): ("RuntimeDefault", "Unconfined", "Localhost"),
    ("AppArmorProfile", "type"): ("RuntimeDefault", "Unconfined", "Localhost"),
    ("PersistentVolumeClaimSpec", "volumeMode"): ("Block", "Filesystem"),
    ("PersistentVolumeClaimSpec", "accessModes"): (
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ),
    ("ImageVolumeSource", "pullPolicy"): ("Always", "IfNotPresent", "Never"),
}
_ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_VOLUME_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
)
_SUBSCRIPTED = re.compile(r"^metadata\.(labels|annotations)\['[^']+'\]$")
_RESOURCE_FIELDS = tuple(
    f"{k}.{r}" for k in ("limits", "requests") for r in ("cpu", "memory", "ephemeral-storage")
)
_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_LIFECYCLE_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")
_NON_NEGATIVE = (
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
)
_FILE_MODES = {
    ("ConfigMapVolumeSource", "defaultMode"),
    ("SecretVolumeSource", "defaultMode"),
    ("ProjectedVolumeSource", "defaultMode"),
    ("DownwardAPIVolumeSource", "defaultMode"),
    ("KeyToPath", "mode"),
    ("DownwardAPIVolumeFile", "mode"),
}

Via = tuple[str, str]  # (the definition holding a value, the property it is under)


def _set(obj: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if obj.get(key) is not None]


def _exactly_one(obj: Mapping[str, Any], keys: tuple[str, ...], what: str, where: str) -> list[FieldProblem]:
    given = _set(obj, keys)
    if len(given) == 1:
        return []
    if not given:
        return [(where, f"{what}: give one of {', '.join(keys)}")]
    return [(where, f"{what}: give only one of {', '.join(given)}")]


def _resources(obj: Mapping[str, Any], where: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    values: dict[str, dict[str, Decimal]] = {}
    for kind in ("limits", "requests"):
        listed = obj.get(kind)
        if not isinstance(listed, Mapping):
            continue
        for name, value in listed.items():
            at = f"{where}.{kind}.{name}"
            if "/" not in name and name not in _CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                hint = _near(name, _CONTAINER_RESOURCES)
                problems.append(
                    (
                        at,
                        f"{name!r} is not a container resource (cpu, memory, ephemeral-storage, "
                        f"hugepages-<size>, or a qualified name like example.com/gpu){hint}",
                    )
                )
            amount = None if _is_template(value) else quantity(value)
            if amount is not None and amount < 0:
                problems.append((at, f"{value!r} is negative"))
            elif amount is not None:
                values.setdefault(kind, {})[name] = amount
    for name, request in values.get("requests", {}).items():
        limit = values.get("limits", {}).get(name)
        if limit is not None and request > limit:
            problems.append(
                (f"{where}.requests.{name}", f"the request is above the limit ({obj['limits'][name]!r})")
            )
    return problems


def _object(
    definition: str, obj: Mapping[str, Any], where: str, via: Via, fields: tuple[str, ...]
) -> list[FieldProblem]:
    """The rules of one object as a whole (one handler, one source, limits above requests)."""
    if definition == "Probe":
        problems = _exactly_one(obj, _PROBE_HANDLERS, "a probe needs exactly one handler", where)
        for field in _NON_NEGATIVE:
            value = obj.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                problems.append((f"{where}.{field}", f"{value} is negative"))
        threshold = obj.get("successThreshold")
        if via[1] in ("livenessProbe", "startupProbe") and threshold not in (None, 1):
            problems.append((f"{where}.successThreshold", f"must be 1 for a {via[1]}, got {threshold!r}"))
        return problems
    if definition == "LifecycleHandler":
        return _exactly_one(obj, _LIFECYCLE_HANDLERS, "a lifecycle handler needs exactly one action", where)
    if definition == "EnvVarSource":
        return _exactly_one(obj, fields, "valueFrom needs exactly one source", where)
    if definition == "EnvVar" and obj.get("value") and obj.get("valueFrom") is not None:
        return [(f"{where}.valueFrom", "give value or valueFrom, not both")]
    if definition == "ResourceRequirements":
        return _resources(obj, where)
    if definition == "VolumeMount":
        sub = obj.get("subPath")
        if isinstance(sub, str) and not _is_template(sub) and (sub.startswith("/") or ".." in sub.split("/")):
            return [(f"{where}.subPath", f"{sub!r} must be a relative path without '..'")]
    return []


def _value(definition: str, field: str, value: Any, where: str, via: Via) -> str | None:
    """What is wrong with one scalar value the schema accepted, if anything."""
    if _is_template(value):
        return None
    allowed = ENUMS.get((definition, field))
    if allowed is not None and isinstance(value, str) and value not in allowed:
        return f"{value!r} is not one of {', '.join(repr(a) for a in allowed)}{_near(value, allowed)}"
    if (definition, field) in _FILE_MODES and isinstance(value, int) and not 0 <= value <= 0o777:
        return f"{value} is not a file mode between 0 and 0777 (511)"
    if definition == "ContainerPort" and field == "name" and isinstance(value, str):
        return port_name_problem(value)
    if field == "port" and definition in ("HTTPGetAction", "TCPSocketAction", "GRPCAction"):
        return _port(value, names=definition != "GRPCAction")
    if definition == "ObjectFieldSelector" and field == "fieldPath" and isinstance(value, str):
        known = _VOLUME_FIELD_PATHS if via[0] == "DownwardAPIVolumeFile" else _ENV_FIELD_PATHS
        if value not in known and not _SUBSCRIPTED.match(value):
            listed = ", ".join(known)
            hint = _near(value, known)
            return f"{value!r} is not a supported field path ({listed}, metadata.labels['<key>']){hint}"
    if (
        definition == "ResourceFieldSelector"
        and field == "resource"
        and isinstance(value, str)
        and value not in _RESOURCE_FIELDS
        and not value.startswith(("limits.hugepages-", "requests.hugepages-"))
    ):
        hint = _near(value, _RESOURCE_FIELDS)
        return f"{value!r} is not a supported resource ({', '.join(_RESOURCE_FIELDS)}){hint}"
    return None


def _values(
    instance: Any, schema: Mapping[str, Any], where: str, loaded: _Schema, via: Via
) -> list[FieldProblem]:
    """Walk an instance along its schema: each object's rules, each value's rules."""
    schema = _resolve(schema, loaded)
    if schema.get("x-podgraft") == "quantity":
        ok = _is_template(instance) or not isinstance(instance, str) or quantity(instance) is not None
        return [] if ok else [(where, f"{instance!r} is not a quantity (like 512Mi, 1Gi, 250m, 0.5, 1e3)")]
    problems: list[FieldProblem] = []
    if isinstance(instance, Mapping) and "properties" in schema:
        definition = loaded.names.get(id(schema), "")
        problems += _object(definition, instance, where, via, tuple(schema["properties"]))
        for field, value in instance.items():
            sub = schema["properties"].get(field)
            if sub is None:
                continue  # an unknown field: the schema names it
            at = f"{where}.{field}"
            nested = isinstance(value, Mapping) or (
                isinstance(value, list) and (definition, field) not in ENUMS
            )
            if nested or _resolve(sub, loaded).get("x-podgraft") == "quantity":
                problems += _values(value, sub, at, loaded, (definition, field))
                continue
            for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                message = _value(definition, field, item, at, via)
                if message is not None:
                    problems.append((at if index is None else f"{at}[{index}]", message))
    elif isinstance(instance, Mapping) and isinstance(schema.get("additionalProperties"), Mapping):
        for key, value in instance.items():
            problems += _values(value, schema["additionalProperties"], f"{where}.{key}", loaded, via)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for index, value in enumerate(instance):
            problems += _values(value, schema["items"], f"{where}[{index}]", loaded, via)
    return problems


def _resolve(schema: Mapping[str, Any], loaded: _Schema) -> Mapping[str, Any]:
    while isinstance(schema.get("$ref"), str):
        schema = loaded.definitions[schema["$ref"].rsplit("/", 1)[-1]]
    return schema
