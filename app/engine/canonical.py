"""Items as the apiserver stores them, so that a pod's item and a policy's rendering compare equal
when they mean the same.

A pod that comes back to the webhook (reinvocation after another webhook, a pod re-created from
`kubectl get -o yaml`, `kubectl debug --copy-to`) carries what the apiserver filled in: defaults
(`imagePullPolicy`, `terminationMessagePath`, port protocols, probe timings, volume modes, requests
copied from limits...), quantities in canonical form, and no empty fields. `canonical_container`,
`canonical_volume`, `canonical_env` and `canonical_mount` apply the same defaults (those of
`k8s.io/kubernetes/pkg/apis/core/v1/defaults.go` that concern what a policy injects) and drop empty
values, to both sides of a comparison. Anything else that differs is a real difference: a field
the pod added, removed or changed is never explained away, with one exception the apiserver itself
makes: its ServiceAccount admission plugin runs again after the webhooks and mounts the pod's API
token volume (`kube-api-access-*`) into every container that has nothing at the token path, the
injected helpers included (`token_mount_added`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from app.engine.podview import as_mapping

SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_VOLUME_PREFIX = "kube-api-access-"
DEFAULT_FILE_MODE = 0o644  # defaultMode of configMap, secret, downwardAPI and projected volumes
TOKEN_EXPIRATION_SECONDS = 3600
PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    **{s: Fraction(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Fraction(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Fraction(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}
MAX_EXPONENT = 64
MAX_DEPTH = 32  # a container of a real pod nests about 8 levels; a deeper one is compared as different


class _TooDeep(ValueError):
    """An item nested deeper than any real one (hostile input): it equals nothing a policy renders."""


def _pruned(value: Any, depth: int = 0) -> Any:
    """`value` without None, "", [] and {} anywhere in maps (the apiserver omits them)."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            pruned = _pruned(item, depth + 1)
            if pruned is not None and pruned not in ("", [], {}):
                kept[key] = pruned
        return kept
    if isinstance(value, list):
        return [_pruned(item, depth + 1) for item in value]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def quantity(value: Any) -> Any:
    """A resource quantity's value, rounded up to milli-units as the apiserver does ("0.1" and
    "100m", "1Gi" and "1024Mi" are equal); anything that is not a quantity is returned as it is."""
    match = (
        _QUANTITY.match(str(value)) if isinstance(value, str | int) and not isinstance(value, bool) else None
    )
    if match is None:
        return value
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        exponent = int(suffix[1:])
        if abs(exponent) > MAX_EXPONENT:
            return value
        scale = Fraction(10) ** exponent
    else:
        scale = _SUFFIX.get(suffix or "", Fraction(1))
    milli = Fraction(number) * scale * 1000
    return Fraction(-((-milli.numerator) // milli.denominator), 1000)


def _resources(resources: Any) -> Any:
    """Quantities as values; requests default to limits (SetDefaults_Pod)."""
    if not isinstance(resources, dict):
        return resources
    limits = {k: quantity(v) for k, v in as_mapping(resources.get("limits")).items()}
    requests = {**limits, **{k: quantity(v) for k, v in as_mapping(resources.get("requests")).items()}}
    return {**resources, "limits": limits, "requests": requests}


def _with(value: Any, defaults: Mapping[str, Any], plain: tuple[str, ...] = ()) -> Any:
    """`value` (a map) with `defaults` for the keys it leaves out or empty. `plain`: fields that are
    plain (not pointer) booleans and integers in the API, so that false and 0 are left out too."""
    if not isinstance(value, dict):
        return value
    kept = {k: v for k, v in value.items() if not _empty(v) and not (k in plain and v in (0, False))}
    return {**defaults, **kept}


def _each(items: Any, function: Callable[[Any], Any]) -> Any:
    return [function(item) for item in items] if isinstance(items, list) else items


def _http_get(handler: Any) -> Any:
    if not isinstance(handler, dict) or not isinstance(handler.get("httpGet"), dict):
        return handler
    return {**handler, "httpGet": _with(handler["httpGet"], {"path": "/", "scheme": "HTTP"})}


def _lifecycle(lifecycle: Any) -> Any:
    if not isinstance(lifecycle, dict):
        return lifecycle
    return {key: _http_get(handler) for key, handler in lifecycle.items()}


def _field_ref(source: Any) -> Any:
    if not isinstance(source, dict) or not isinstance(source.get("fieldRef"), dict):
        return source
    return {**source, "fieldRef": _with(source["fieldRef"], {"apiVersion": "v1"})}


def _env_var(var: Any) -> Any:
    if not isinstance(var, dict) or not isinstance(var.get("valueFrom"), dict):
        return var
    source = _field_ref(var["valueFrom"])
    if isinstance(source.get("fileKeyRef"), dict):
        source = {**source, "fileKeyRef": _with(source["fileKeyRef"], {"optional": False})}
    return {**var, "valueFrom": source}


def _port(port: Any, host_network: bool) -> Any:
    if not isinstance(port, dict):
        return port
    defaults: dict[str, Any] = {"protocol": "TCP"}
    if host_network:  # SetDefaults_Pod: with host networking every container port is a host port
        defaults["hostPort"] = port.get("containerPort")
    return _with(port, defaults, ("hostPort",))


def _mount(mount: Any) -> Any:
    return _with(mount, {}, ("readOnly",))


def pull_policy(image: str) -> str:
    """The default `imagePullPolicy`: Always for a `latest` (or missing) tag, else IfNotPresent."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return "Always" if tag == "latest" or not (tag or digest) else "IfNotPresent"


def _container(container: Mapping[str, Any], host_network: bool) -> dict[str, Any]:
    image = container.get("image")
    defaults = {
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": pull_policy(image) if isinstance(image, str) else "",
    }
    result: dict[str, Any] = _with(container, defaults, ("stdin", "stdinOnce", "tty"))
    result["ports"] = _each(container.get("ports"), lambda port: _port(port, host_network))
    result["env"] = _each(container.get("env"), _env_var)
    result["volumeMounts"] = _each(container.get("volumeMounts"), _mount)
    result["resources"] = _resources(container.get("resources"))
    for probe in PROBES:
        result[probe] = _http_get(_with(container.get(probe), PROBE_DEFAULTS, ("initialDelaySeconds",)))
    result["lifecycle"] = _lifecycle(container.get("lifecycle"))
    return result


def canonical_container(container: Any, *, host_network: bool = False) -> Any:
    if not isinstance(container, dict):
        return container
    return _pruned(_container(container, host_network))


def _items(source: Any) -> Any:
    """A downwardAPI source (volume or projection) with its fieldRefs defaulted."""
    if not isinstance(source, dict):
        return source
    return {**source, "items": _each(source.get("items"), _field_ref)}


def _projection(projection: Any) -> Any:
    if not isinstance(projection, dict):
        return projection
    result = {**projection, "downwardAPI": _items(projection.get("downwardAPI"))}
    result["serviceAccountToken"] = _with(
        projection.get("serviceAccountToken"), {"expirationSeconds": TOKEN_EXPIRATION_SECONDS}
    )
    return result


def canonical_volume(volume: Any) -> Any:
    """A volume with its defaults; a volume without a source is an emptyDir (SetDefaults_Volume)."""
    if not isinstance(volume, dict):
        return volume
    result = dict(volume)
    for kind in ("configMap", "secret", "projected", "downwardAPI"):
        result[kind] = _with(volume.get(kind), {"defaultMode": DEFAULT_FILE_MODE})
    result["downwardAPI"] = _items(result["downwardAPI"])
    projected = result["projected"]
    if isinstance(projected, dict):
        result["projected"] = {**projected, "sources": _each(projected.get("sources"), _projection)}
    result["persistentVolumeClaim"] = _with(volume.get("persistentVolumeClaim"), {}, ("readOnly",))
    claim = as_mapping(as_mapping(volume.get("ephemeral")).get("volumeClaimTemplate"))
    if claim:
        spec = _with(claim.get("spec"), {"volumeMode": "Filesystem"})
        result["ephemeral"] = {**volume["ephemeral"], "volumeClaimTemplate": {**claim, "spec": spec}}
    return _pruned(result)


def canonical_env(var: Any) -> Any:
    return _pruned(_env_var(var))


def canonical_mount(mount: Any) -> Any:
    return _pruned(_mount(mount))


def _same(canonical: Callable[[Any], Any], current: Any, wanted: Any) -> bool:
    if current == wanted:  # the pod as Podgraft left it, before the apiserver's defaults
        return True
    try:
        return bool(canonical(current) == canonical(wanted))
    except _TooDeep:
        return False


def _mounts_at(container: Mapping[str, Any], path: str) -> list[Any]:
    mounts = container.get("volumeMounts")
    return (
        [m for m in mounts if isinstance(m, dict) and m.get("mountPath") == path]
        if isinstance(mounts, list)
        else []
    )


def token_mount_added(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether `current` holds the API token mount exactly as the apiserver's ServiceAccount
    admission plugin adds it (plugin/pkg/admission/serviceaccount: `{name: kube-api-access-<random>,
    readOnly: true, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}`, appended to each
    container with no mount at that path), where `wanted` mounts nothing at that path."""
    if _mounts_at(wanted, SERVICE_ACCOUNT_MOUNT_PATH):
        return False
    found = _mounts_at(current, SERVICE_ACCOUNT_MOUNT_PATH)
    return len(found) == 1 and _is_token_mount(found[0])


def _is_token_mount(mount: Mapping[str, Any]) -> bool:
    name = mount.get("name")
    return (
        isinstance(name, str)
        and name.startswith(SERVICE_ACCOUNT_VOLUME_PREFIX)
        and mount.get("readOnly") is True
        and set(mount) <= {"name", "readOnly", "mountPath"}
    )


def without_token_mount(container: Mapping[str, Any]) -> dict[str, Any]:
    """`container` without the ServiceAccount plugin's token mount."""
    mounts = [
        m
        for m in container["volumeMounts"]
        if not (isinstance(m, dict) and m.get("mountPath") == SERVICE_ACCOUNT_MOUNT_PATH)
    ]
    return {**container, "volumeMounts": mounts}


def same_container(current: Any, wanted: Any, *, host_network: bool) -> bool:
    """Equal as the apiserver stores them, where the stored one may also carry the API token mount
    that the ServiceAccount plugin added after Podgraft's patch (see the module doc)."""
    if current == wanted:  # the pod as Podgraft left it: nothing to look into
        return True
    if isinstance(current, dict) and isinstance(wanted, dict) and token_mount_added(current, wanted):
        current = without_token_mount(current)
    return _same(lambda item: canonical_container(item, host_network=host_network), current, wanted)


def same_volume(current: Any, wanted: Any) -> bool:
    return _same(canonical_volume, current, wanted)


def same_env(current: Any, wanted: Any) -> bool:
    return _same(canonical_env, current, wanted)


def same_mount(current: Any, wanted: Any) -> bool:
    return _same(canonical_mount, current, wanted)
