"""Apply rendered policies to a pod: pure, on the raw pod dict, copy-on-write.

The original pod is never modified. The mutated pod shares every subtree it does not change with
the original (so the patch builder compares little), and each changed container, list or map is a
fresh copy. Conflicts never crash and never duplicate: the conflicting item is skipped and a
warning says so; for a `required` policy a port clash denies the pod.

Layout of the result (see README, "How injection is laid out"):

    initContainers: [native sidecars] [policy init containers, position first]
                    [the pod's own init containers] [policy init containers, position last]
    containers:     [the pod's own containers] [classic sidecars] [extra containers]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.engine.config import EngineConfig
from app.engine.podview import copied_dict, copied_list, names
from app.engine.policyset import CompiledPolicy

Pod = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What mutating one pod produced besides the pod itself."""

    warnings: list[str] = field(default_factory=list)
    denial: str | None = None
    injected: list[CompiledPolicy] = field(default_factory=list)
    items: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (policy, kind, item)


def _ports(container: Mapping[str, Any]) -> list[tuple[int, str]]:
    found = []
    for port in copied_list(container.get("ports")):
        if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
            found.append((port["containerPort"], str(port.get("protocol") or "TCP")))
    return found


def working_copy(pod: Mapping[str, Any]) -> Pod:
    """A shallow copy of the pod whose metadata and spec can be edited without touching the original."""
    copy = dict(pod)
    copy["metadata"] = copied_dict(pod.get("metadata"))
    copy["spec"] = copied_dict(pod.get("spec"))
    return copy


def sidecar_is_native(policy: CompiledPolicy, config: EngineConfig) -> bool:
    mode = policy.model.spec.sidecar_mode or config.sidecar_mode
    if mode == "auto":
        return config.native_sidecars_supported
    return mode == "native"


class _PodEditor:
    """Edits one working copy; remembers which of the pod's own containers it has copied."""

    def __init__(self, pod: Pod, outcome: Outcome, injected_before: frozenset[str] = frozenset()) -> None:
        self.pod = pod
        self.meta: dict[str, Any] = pod["metadata"]
        self.spec: dict[str, Any] = pod["spec"]
        self.outcome = outcome
        # The pod's own app containers: env and mounts go there, never into helpers injected earlier.
        self.own = [
            index
            for index, c in enumerate(copied_list(self.spec.get("containers")))
            if not (isinstance(c, dict) and c.get("name") in injected_before)
        ]
        self.injected_names: list[str] = []
        self._containers_copied = False
        self._copied: set[int] = set()
        self.changes = 0  # edits made so far; a policy that made none is not recorded as injected
        self.native_count = 0  # native sidecars injected at the front of initContainers
        self.first_count = 0  # init containers injected after them, before the pod's own

    # --- helpers
    def all_containernames(self) -> set[str]:
        return (
            names(copied_list(self.spec.get("initContainers")))
            | names(copied_list(self.spec.get("containers")))
            | names(copied_list(self.spec.get("ephemeralContainers")))
        )

    def running_ports(self) -> dict[tuple[int, str], str]:
        """Ports of containers that run alongside each other (app containers and native sidecars)."""
        used: dict[tuple[int, str], str] = {}
        running = [
            c
            for c in copied_list(self.spec.get("initContainers"))
            if isinstance(c, dict) and c.get("restartPolicy") == "Always"
        ]
        running += [c for c in copied_list(self.spec.get("containers")) if isinstance(c, dict)]
        for container in running:
            for port in _ports(container):
                used.setdefault(port, str(container.get("name")))
        return used

    def warn(self, policy: CompiledPolicy, message: str) -> None:
        self.outcome.warnings.append(f"podgraft: policy {policy.name!r}: {message}")

    # --- containers
    def check_ports(self, policy: CompiledPolicy, container: Mapping[str, Any]) -> bool:
        used = self.running_ports()
        for port, protocol in _ports(container):
            owner = used.get((port, protocol))
            if owner is not None:
                message = (
                    f"container {container['name']!r} port {port}/{protocol} clashes with container "
                    f"{owner!r} (containers in a pod share localhost)"
                )
                if policy.required:
                    self.outcome.denial = (
                        self.outcome.denial or f"podgraft: required policy {policy.name!r}: {message}"
                    )
                    return False
                self.warn(policy, message)
        return True

    def add_containers(
        self, policy: CompiledPolicy, containers: list[dict[str, Any]], *, where: str, long_running: bool
    ) -> None:
        for container in containers:
            if container["name"] in self.all_containernames():
                self.warn(policy, f"a container named {container['name']!r} already exists; not injected")
                continue
            volumes = names(copied_list(self.spec.get("volumes")))
            missing = sorted({m["name"] for m in copied_list(container.get("volumeMounts"))} - volumes)
            if missing:
                self.warn(
                    policy,
                    f"container {container['name']!r} mounts {', '.join(missing)}, which the pod "
                    "does not have; not injected",
                )
                continue
            if long_running and not self.check_ports(policy, container):
                continue
            self._insert(container, where)
            self.outcome.items.append((policy.name, "container", container))

    def _insert(self, container: dict[str, Any], where: str) -> None:
        self.changes += 1
        self.injected_names.append(container["name"])
        if where == "containers":
            containers = copied_list(self.spec.get("containers"))
            containers.append(container)
            self.spec["containers"] = containers
            return
        inits = copied_list(self.spec.get("initContainers"))
        if where == "native":
            inits.insert(self.native_count, container)
            self.native_count += 1
        elif where == "first":
            inits.insert(self.native_count + self.first_count, container)
            self.first_count += 1
        else:
            inits.append(container)
        self.spec["initContainers"] = inits

    # --- pod-level lists and maps
    def add_volumes(self, policy: CompiledPolicy, volumes: list[dict[str, Any]]) -> None:
        existing = {v.get("name"): v for v in copied_list(self.spec.get("volumes")) if isinstance(v, dict)}
        added = []
        for volume in volumes:
            current = existing.get(volume["name"])
            if current is None:
                added.append(volume)
                self.outcome.items.append((policy.name, "volume", volume))
            elif current != volume:
                self.warn(
                    policy, f"the pod already has a different volume named {volume['name']!r}; kept the pod's"
                )
        if added:
            self.changes += 1
            self.spec["volumes"] = copied_list(self.spec.get("volumes")) + added

    def _own_container(self, index: int) -> dict[str, Any]:
        """The pod's container at `index`, copied (once) so it can be edited."""
        if not self._containers_copied:
            self.spec["containers"] = copied_list(self.spec.get("containers"))
            self._containers_copied = True
        containers = self.spec["containers"]
        if index not in self._copied:
            containers[index] = dict(containers[index])
            self._copied.add(index)
        container: dict[str, Any] = containers[index]
        return container

    def add_mounts(self, policy: CompiledPolicy, mounts: list[dict[str, Any]], targets: list[int]) -> None:
        if not mounts:
            return
        volumes = names(copied_list(self.spec.get("volumes")))
        for mount in mounts:
            if mount["name"] not in volumes:
                self.warn(policy, f"volumeMount {mount['name']!r} names no volume of the pod; not mounted")
                continue
            for index in targets:
                container = self.spec["containers"][index]
                if not isinstance(container, dict):
                    continue
                current = copied_list(container.get("volumeMounts"))
                same_path = [
                    m for m in current if isinstance(m, dict) and m.get("mountPath") == mount["mountPath"]
                ]
                if same_path:
                    if same_path[0] != mount:
                        self.warn(
                            policy,
                            f"container {container.get('name')!r} already mounts something at "
                            f"{mount['mountPath']!r}; not mounted",
                        )
                    continue
                self._own_container(index)["volumeMounts"] = [*current, mount]
                self.changes += 1

    def add_env(self, policy: CompiledPolicy, env: list[dict[str, Any]], targets: list[int]) -> None:
        if not env:
            return
        for index in targets:
            container = self.spec["containers"][index]
            if not isinstance(container, dict):
                continue
            current = copied_list(container.get("env"))
            by_name = {e.get("name"): e for e in current if isinstance(e, dict)}
            added = []
            for var in env:
                existing = by_name.get(var["name"])
                if existing is None:
                    added.append(var)
                elif existing != var:
                    self.warn(
                        policy,
                        f"container {container.get('name')!r} already sets env {var['name']!r}; "
                        "kept its value",
                    )
            if added:
                self._own_container(index)["env"] = [*current, *added]
                self.changes += 1

    def add_map(
        self, policy: CompiledPolicy, key: str, values: Mapping[str, str], reserved: set[str]
    ) -> None:
        current = copied_dict(self.meta.get(key))
        changed = False
        for name, value in values.items():
            if name in reserved:
                self.warn(policy, f"{key[:-1]} {name!r} is reserved for Podgraft; not set")
            elif name not in current:
                current[name] = value
                changed = True
            elif current[name] != value:
                self.warn(policy, f"the pod already has {key[:-1]} {name!r}={current[name]!r}; kept it")
        if changed:
            self.changes += 1
            self.meta[key] = current

    def add_pull_secrets(self, secrets: list[dict[str, Any]]) -> None:
        current = copied_list(self.spec.get("imagePullSecrets"))
        present = names(current)
        added = [s for s in secrets if s["name"] not in present]
        if added:
            self.changes += 1
            self.spec["imagePullSecrets"] = current + added


def apply_policy(
    editor: _PodEditor, policy: CompiledPolicy, rendered: Mapping[str, Any], config: EngineConfig
) -> None:
    """Graft one rendered policy spec onto the pod being edited."""
    own = editor.own
    native = sidecar_is_native(policy, config)
    sidecars = [dict(c, restartPolicy="Always") if native else c for c in rendered.get("sidecars", [])]
    editor.add_volumes(policy, list(rendered.get("volumes", [])))
    editor.add_containers(policy, sidecars, where="native" if native else "containers", long_running=True)
    position = rendered.get("initContainerPosition", "first")
    editor.add_containers(
        policy, list(rendered.get("initContainers", [])), where=position, long_running=False
    )
    editor.add_containers(policy, list(rendered.get("containers", [])), where="containers", long_running=True)
    editor.add_mounts(policy, list(rendered.get("volumeMounts", [])), own)
    editor.add_env(policy, list(rendered.get("env", [])), own)
    reserved = {config.status_annotation, config.inject_annotation}
    editor.add_map(policy, "annotations", rendered.get("annotations", {}), reserved)
    editor.add_map(policy, "labels", rendered.get("labels", {}), set())
    editor.add_pull_secrets(list(rendered.get("imagePullSecrets", [])))


def status_value(
    previous: Mapping[str, str],
    injected: list[CompiledPolicy],
    containers: Iterable[str] = (),
) -> str:
    """The status annotation: every policy injected so far with its content hash, and the containers
    injected so far (so a later pass never mistakes them for the pod's own), both sorted."""
    merged = dict(previous)
    for policy in injected:
        merged[policy.name] = policy.content_hash
    status: dict[str, Any] = {"policies": [{"name": name, "hash": merged[name]} for name in sorted(merged)]}
    names = sorted(set(containers))
    if names:
        status["containers"] = names
    return orjson.dumps(status).decode()


def mutate_pod(
    pod: Mapping[str, Any],
    rendered: list[tuple[CompiledPolicy, Mapping[str, Any]]],
    *,
    config: EngineConfig,
    previous_status: Mapping[str, str],
    previous_containers: frozenset[str] = frozenset(),
) -> tuple[Pod, Outcome]:
    """Apply every rendered policy, in order, to a copy of `pod`; record them in the status annotation."""
    outcome = Outcome()
    copy = working_copy(pod)
    editor = _PodEditor(copy, outcome, previous_containers)
    for policy, spec in rendered:
        before = editor.changes
        apply_policy(editor, policy, spec, config)
        if editor.changes > before:
            outcome.injected.append(policy)
        else:
            outcome.warnings.append(
                f"podgraft: policy {policy.name!r}: nothing left to inject after conflicts"
            )
    if outcome.injected:
        annotations = copied_dict(copy["metadata"].get("annotations"))
        annotations[config.status_annotation] = status_value(
            previous_status, outcome.injected, [*previous_containers, *editor.injected_names]
        )
        copy["metadata"]["annotations"] = annotations
    return copy, outcome


def image_allowed(image: str, patterns: list[str]) -> bool:
    """Glob match (`registry.example.com/debug/*`, `busybox:1.*`); no patterns: any image."""
    return not patterns or any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def mutate_ephemeral(
    pod: Mapping[str, Any],
    old_pod: Mapping[str, Any],
    rules: list[tuple[CompiledPolicy, Mapping[str, Any]]],
) -> tuple[Pod, Outcome]:
    """Apply the policies' ephemeral rules to the ephemeral containers added by this update.

    Only `spec.ephemeralContainers` may change on this subresource, so nothing else is touched.
    """
    outcome = Outcome()
    copy = working_copy(pod)
    old_names = names(copied_list(copied_dict(old_pod.get("spec")).get("ephemeralContainers")))
    volumes = names(copied_list(copy["spec"].get("volumes")))
    containers = copied_list(copy["spec"].get("ephemeralContainers"))
    for index, container in enumerate(containers):
        if not isinstance(container, dict) or container.get("name") in old_names:
            continue
        updated = dict(container)
        for policy, spec in rules:
            allowed = list(spec.get("allowedImages", []))
            image = str(container.get("image", ""))
            if not image_allowed(image, allowed):
                outcome.denial = outcome.denial or (
                    f"podgraft: policy {policy.name!r} does not allow image {image!r} for ephemeral "
                    f"container {container.get('name')!r}; allowed: {', '.join(allowed)}"
                )
                continue
            _apply_rules_to_container(updated, policy, spec, volumes, outcome)
        if updated != container:
            containers[index] = updated
            copy["spec"]["ephemeralContainers"] = containers
    outcome.injected = [policy for policy, _ in rules]
    return copy, outcome


def _apply_rules_to_container(
    container: dict[str, Any],
    policy: CompiledPolicy,
    spec: Mapping[str, Any],
    volumes: set[str],
    outcome: Outcome,
) -> None:
    name = container.get("name")
    mounts = copied_list(container.get("volumeMounts"))
    paths = {m.get("mountPath") for m in mounts if isinstance(m, dict)}
    for mount in spec.get("volumeMounts", []):
        if mount["name"] not in volumes:
            outcome.warnings.append(
                f"podgraft: policy {policy.name!r}: volumeMount {mount['name']!r} names no "
                f"volume of the pod; not mounted into {name!r}"
            )
        elif mount["mountPath"] not in paths:
            mounts.append(mount)
            paths.add(mount["mountPath"])
    if mounts:
        container["volumeMounts"] = mounts
    env = copied_list(container.get("env"))
    present = names(env)
    env += [var for var in spec.get("env", []) if var["name"] not in present]
    if env:
        container["env"] = env
