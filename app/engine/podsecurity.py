"""Pod Security Standards checks on what Podgraft injects (pure).

When a namespace enforces a Pod Security level (`pod-security.kubernetes.io/enforce`), the
apiserver rejects a pod whose injected helper breaks it, with a message about a container the
application team never wrote. Podgraft checks its own additions first and says, in a warning,
which policy and container break which rule. It checks only what it injects: the pod's own
containers are the apiserver's business.

The rules follow https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the
container-level and volume checks of `baseline` and `restricted`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.engine.podview import as_mapping

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = frozenset(
    [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ]
)
RESTRICTED_VOLUMES = frozenset(
    [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
        "image",
    ]
)


def _baseline(container: Mapping[str, Any]) -> list[str]:
    problems = []
    security = as_mapping(container.get("securityContext"))
    if security.get("privileged") is True:
        problems.append("privileged")
    added = set(as_mapping(security.get("capabilities")).get("add") or []) - BASELINE_CAPABILITIES
    if added:
        problems.append(f"adds capabilities {', '.join(sorted(map(str, added)))}")
    if any(isinstance(p, dict) and p.get("hostPort") for p in container.get("ports") or []):
        problems.append("hostPort")
    if security.get("procMount") not in (None, "Default"):
        problems.append("procMount")
    seccomp = as_mapping(security.get("seccompProfile")).get("type")
    if seccomp == "Unconfined":
        problems.append("seccompProfile Unconfined")
    return problems


def _restricted(container: Mapping[str, Any], pod_security: Mapping[str, Any]) -> list[str]:
    problems = []
    security = as_mapping(container.get("securityContext"))
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot is not true")
    if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
        problems.append("runAsUser 0")
    drop = as_mapping(security.get("capabilities")).get("drop") or []
    if "ALL" not in drop:
        problems.append("capabilities do not drop ALL")
    added = set(as_mapping(security.get("capabilities")).get("add") or []) - {"NET_BIND_SERVICE"}
    if added:
        problems.append(f"adds capabilities {', '.join(sorted(map(str, added)))}")
    seccomp = as_mapping(security.get("seccompProfile") or pod_security.get("seccompProfile")).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile is not RuntimeDefault or Localhost")
    return problems


def container_problems(
    container: Mapping[str, Any], *, level: str, pod_security: Mapping[str, Any]
) -> list[str]:
    """What in `container` breaks `level` (empty when nothing does, or for `privileged`)."""
    if level not in ("baseline", "restricted"):
        return []
    problems = _baseline(container)
    if level == "restricted":
        problems += [p for p in _restricted(container, pod_security) if p not in problems]
    return problems


def volume_problems(volume: Mapping[str, Any], *, level: str) -> list[str]:
    kinds = [key for key in volume if key != "name"]
    if level in ("baseline", "restricted") and "hostPath" in kinds:
        return ["hostPath volume"]
    if level == "restricted" and any(kind not in RESTRICTED_VOLUMES for kind in kinds):
        return [f"{', '.join(kinds)} volume"]
    return []


def enforced_level(namespace_labels: Mapping[str, str] | None) -> str | None:
    """The enforced level of a namespace, or None when unknown or `privileged`."""
    level = (namespace_labels or {}).get(ENFORCE_LABEL)
    return level if level in ("baseline", "restricted") else None


def injection_warnings(
    *,
    level: str,
    namespace: str,
    pod_spec: Mapping[str, Any],
    injected: Iterable[tuple[str, str, Mapping[str, Any]]],
) -> list[str]:
    """Warnings for injected items (`(policy, kind, item)` with kind `container` or `volume`)."""
    warnings = []
    pod_security = as_mapping(pod_spec.get("securityContext"))
    for policy, kind, item in injected:
        if kind == "container":
            problems = container_problems(item, level=level, pod_security=pod_security)
        else:
            problems = volume_problems(item, level=level)
        if problems:
            warnings.append(
                f"podgraft: policy {policy!r}: {kind} {item.get('name')!r} violates Pod Security "
                f"{level!r} enforced in namespace {namespace!r} ({'; '.join(problems)}); "
                "the apiserver will reject the pod"
            )
    return warnings
