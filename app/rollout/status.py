"""A workload's rollout, read from the object the API returns (pure): the restart patch, whether a
restart can roll it out at all, whether its rollout is complete, and which of its pods are new.

`rollout_status` follows `kubectl rollout status` (k8s.io/kubectl/pkg/polymorphichelpers/
rollout_status.go, v0.35.4) rule for rule, with kubectl's messages:

- Deployment: the controller has observed the latest generation; its Progressing condition is not
  `ProgressDeadlineExceeded` (then the rollout has failed); `updatedReplicas` >= `spec.replicas`; no
  old replicas left (`status.replicas` == `updatedReplicas`); `availableReplicas` >= `updatedReplicas`.
- StatefulSet (RollingUpdate): generation observed (and not 0); `readyReplicas` >= `spec.replicas`;
  with `rollingUpdate` set (the apiserver always defaults it) `updatedReplicas` >= replicas -
  partition, else `updateRevision` == `currentRevision`.
- DaemonSet (RollingUpdate): generation observed; `updatedNumberScheduled` and `numberAvailable` >=
  `desiredNumberScheduled`.

A restart is `kubectl rollout restart`'s: the pod template's `kubectl.kubernetes.io/restartedAt`
annotation set to the time (RFC 3339, seconds), which the controller rolls out as a new revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.audit.owners import controller_ref
from app.engine.podview import as_list, as_mapping

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"  # on a Deployment and its ReplicaSets
REVISION_HASH = "controller-revision-hash"  # on StatefulSet and DaemonSet pods and revisions
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
WAITING_REASONS = frozenset(  # a container that will not start by itself (kubectl's list)
    [
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
    ]
)


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    done: bool
    message: str
    failed: str = ""  # the rollout cannot complete by waiting (the progress deadline passed)


def _int(value: Any) -> int:
    """A count as the API gives it (omitted when zero)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _name(obj: Mapping[str, Any]) -> str:
    return str(as_mapping(obj.get("metadata")).get("name") or "")


def _generations(obj: Mapping[str, Any]) -> tuple[int, int]:
    """(metadata.generation, status.observedGeneration)."""
    return _int(as_mapping(obj.get("metadata")).get("generation")), _int(
        as_mapping(obj.get("status")).get("observedGeneration")
    )


def _replicas(spec: Mapping[str, Any]) -> int | None:
    value = spec.get("replicas")
    return value if isinstance(value, int) else None


def _strategy(kind: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_mapping(spec.get("strategy" if kind == "Deployment" else "updateStrategy"))


def deployment_status(obj: Mapping[str, Any]) -> RolloutStatus:
    name, spec, status = _name(obj), as_mapping(obj.get("spec")), as_mapping(obj.get("status"))
    generation, observed = _generations(obj)
    if generation > observed:
        return RolloutStatus(False, "Waiting for deployment spec update to be observed...")
    for condition in as_list(status.get("conditions")):
        found = as_mapping(condition)
        if found.get("type") == "Progressing" and found.get("reason") == PROGRESS_DEADLINE:
            failed = f"deployment {name!r} exceeded its progress deadline"
            return RolloutStatus(False, failed, failed=failed)
    wanted, updated = _replicas(spec), _int(status.get("updatedReplicas"))
    total, available = _int(status.get("replicas")), _int(status.get("availableReplicas"))
    if wanted is not None and updated < wanted:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {updated} out of {wanted} new replicas "
            "have been updated...",
        )
    if total > updated:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {total - updated} old replicas are "
            "pending termination...",
        )
    if available < updated:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {available} of {updated} updated replicas "
            "are available...",
        )
    return RolloutStatus(True, f"deployment {name!r} successfully rolled out")


def statefulset_status(obj: Mapping[str, Any]) -> RolloutStatus:
    spec, status = as_mapping(obj.get("spec")), as_mapping(obj.get("status"))
    generation, observed = _generations(obj)
    if observed == 0 or generation > observed:
        return RolloutStatus(False, "Waiting for statefulset spec update to be observed...")
    wanted, ready = _replicas(spec), _int(status.get("readyReplicas"))
    if wanted is not None and ready < wanted:
        return RolloutStatus(False, f"Waiting for {wanted - ready} pods to be ready...")
    updated = _int(status.get("updatedReplicas"))
    rolling = _strategy("StatefulSet", spec).get("rollingUpdate")
    if isinstance(rolling, Mapping):
        partition = rolling.get("partition")
        if wanted is not None and isinstance(partition, int) and updated < wanted - partition:
            return RolloutStatus(
                False,
                f"Waiting for partitioned roll out to finish: {updated} out of {wanted - partition} new pods "
                "have been updated...",
            )
        return RolloutStatus(True, f"partitioned roll out complete: {updated} new pods have been updated...")
    update, current = status.get("updateRevision"), status.get("currentRevision")
    if update != current:
        return RolloutStatus(
            False,
            f"waiting for statefulset rolling update to complete {updated} pods at revision {update}...",
        )
    return RolloutStatus(
        True,
        f"statefulset rolling update complete {_int(status.get('currentReplicas'))} pods at revision "
        f"{current}...",
    )


def daemonset_status(obj: Mapping[str, Any]) -> RolloutStatus:
    name, status = _name(obj), as_mapping(obj.get("status"))
    generation, observed = _generations(obj)
    if generation > observed:
        return RolloutStatus(False, "Waiting for daemon set spec update to be observed...")
    desired = _int(status.get("desiredNumberScheduled"))
    updated, available = _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable"))
    if updated < desired:
        return RolloutStatus(
            False,
            f"Waiting for daemon set {name!r} rollout to finish: {updated} out of {desired} new pods have "
            "been updated...",
        )
    if available < desired:
        return RolloutStatus(
            False,
            f"Waiting for daemon set {name!r} rollout to finish: {available} of {desired} updated pods are "
            "available...",
        )
    return RolloutStatus(True, f"daemon set {name!r} successfully rolled out")


STATUS_RULES = {
    "Deployment": deployment_status,
    "StatefulSet": statefulset_status,
    "DaemonSet": daemonset_status,
}


def rollout_status(kind: str, obj: Mapping[str, Any]) -> RolloutStatus:
    """Is the rollout of this Deployment, StatefulSet or DaemonSet complete (kubectl's rules)?"""
    return STATUS_RULES[kind](obj)


def cannot_progress(kind: str, obj: Mapping[str, Any]) -> str:
    """Why a restart would not roll this workload's pods out ("" when it would)."""
    spec = as_mapping(obj.get("spec"))
    if kind == "Deployment" and spec.get("paused") is True:
        return "the Deployment is paused: a restart waits until `kubectl rollout resume`"
    strategy = _strategy(kind, spec)
    if kind in ("StatefulSet", "DaemonSet") and strategy.get("type") == "OnDelete":
        return "updateStrategy OnDelete: the controller replaces a pod only when it is deleted"
    partition = as_mapping(strategy.get("rollingUpdate")).get("partition")
    if kind == "StatefulSet" and isinstance(partition, int) and partition > 0:
        return (
            f"rollingUpdate.partition is {partition}: pods with an ordinal below {partition} keep their "
            "revision on a restart"
        )
    return ""


def restart_patch(now: datetime) -> dict[str, Any]:
    """The merge patch `kubectl rollout restart` amounts to (`now` carries its UTC offset, as
    kubectl's local time does)."""
    stamp = now.replace(microsecond=0).isoformat()
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def restarted_at(obj: Mapping[str, Any]) -> str:
    template = as_mapping(as_mapping(obj.get("spec")).get("template"))
    return str(as_mapping(as_mapping(template.get("metadata")).get("annotations")).get(RESTARTED_AT) or "")


def _owner_of(item: Mapping[str, Any]) -> tuple[str, str] | None:
    return controller_ref(as_mapping(item.get("metadata")))


def _owned_by(item: Mapping[str, Any], kind: str, name: str) -> bool:
    return _owner_of(item) == (kind, name)


def _annotation(obj: Mapping[str, Any], key: str) -> str:
    return str(as_mapping(as_mapping(obj.get("metadata")).get("annotations")).get(key) or "")


def _label(obj: Mapping[str, Any], key: str) -> str:
    return str(as_mapping(as_mapping(obj.get("metadata")).get("labels")).get(key) or "")


def _live(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods not being deleted (what the controllers count)."""
    return [p for p in pods if not as_mapping(p.get("metadata")).get("deletionTimestamp")]


def owned_pods(
    kind: str,
    obj: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    replicasets: Iterable[Mapping[str, Any]] = (),
) -> list[Mapping[str, Any]]:
    """The live pods of this workload (a Deployment's through its ReplicaSets), from pods listed by
    its selector (which may also select other controllers' pods)."""
    name = _name(obj)
    if kind != "Deployment":
        return [p for p in _live(pods) if _owned_by(p, kind, name)]
    mine = {("ReplicaSet", _name(rs)) for rs in replicasets if _owned_by(rs, "Deployment", name)}
    return [p for p in _live(pods) if _owner_of(p) in mine]


def new_pods(
    kind: str,
    obj: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    *,
    replicasets: Iterable[Mapping[str, Any]] = (),
    revisions: Iterable[Mapping[str, Any]] = (),
) -> list[Mapping[str, Any]]:
    """The live pods at the workload's newest revision: a Deployment's new ReplicaSet (the one whose
    revision annotation is the Deployment's), a StatefulSet's `status.updateRevision`, a DaemonSet's
    newest ControllerRevision. Only meaningful once the controller has observed the restart."""
    name = _name(obj)
    if kind == "Deployment":
        revision = _annotation(obj, REVISION)
        current = {
            _name(rs)
            for rs in replicasets
            if _owned_by(rs, "Deployment", name) and revision and _annotation(rs, REVISION) == revision
        }
        return [p for p in _live(pods) if _owner_of(p) in {("ReplicaSet", rs) for rs in current}]
    if kind == "StatefulSet":
        wanted = str(as_mapping(obj.get("status")).get("updateRevision") or "")
    else:
        owned = [r for r in revisions if _owned_by(r, "DaemonSet", name)]
        newest = max(owned, key=lambda r: _int(r.get("revision")), default=None)
        wanted = _label(newest, REVISION_HASH) if newest is not None else ""
    return [
        p for p in _live(pods) if wanted and _owned_by(p, kind, name) and _label(p, REVISION_HASH) == wanted
    ]


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> str:
    """Why pods do not become Ready, as kubectl adds it to its waiting message: unschedulable, or a
    container waiting on an image pull, a crash loop or its configuration ("" when none of these)."""
    for pod in pods:
        status = as_mapping(pod.get("status"))
        for condition in as_list(status.get("conditions")):
            found = as_mapping(condition)
            if (found.get("type"), found.get("status"), found.get("reason")) == (
                "PodScheduled",
                "False",
                "Unschedulable",
            ):
                return f"pod {_name(pod)} is unschedulable: {found.get('message') or ''}".strip()
        for group in ("initContainerStatuses", "containerStatuses"):
            for container in as_list(status.get(group)):
                state = as_mapping(as_mapping(as_mapping(container).get("state")).get("waiting"))
                reason = state.get("reason")
                if reason in WAITING_REASONS:
                    message = str(state.get("message") or "")[:200]
                    return (
                        f"pod {_name(pod)} container {as_mapping(container).get('name')}: {reason} {message}"
                    )
    return ""
