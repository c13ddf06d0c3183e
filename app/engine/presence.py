"""Is a policy's injection present and current in a pod, and what stands in its way (pure).

`plan_policy` compares what one rendered policy injects with a pod, item by item: containers,
volumes, env and mounts of the app containers, labels, annotations and pull secrets.

- An item the pod lacks is added.
- An item the pod has, equal to the rendering once both are read as the apiserver stores them
  (`canonical`), is current.
- A same-named item that differs is a **conflict**. Only when the pod's status annotation names the
  policy (the pod carries an earlier version, or a copy of it) is the item replaced by the live
  rendering instead, unless a policy applied before it in this admission injects it too: a claim
  can bring the pod closer to the policy, never take an item from another one.
- So are conflicts: a long-running container whose port clashes with a container that runs beside
  it (localhost, or the node's ports for `hostNetwork` pods and host ports), a mount of a volume the
  policy neither defines (`spec.volumes`) nor takes from the pod (`spec.podVolumes`), a declared pod
  volume the pod lacks, and a classic sidecar in a pod that must run to completion (Jobs).

The plan is current when there is nothing to add or replace and nothing in the way. (Longer than
the house's ~400 lines on purpose: one planner holds every comparison rule of one policy against
one pod, so that what is added, what is current and what conflicts read side by side.)
`injection_state` asks exactly that for one policy and a pod (what `podgraft audit` needs); `mutate`
applies the plans of the policies selected for a pod, all of a plan or, on a conflict, none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from app.engine.canonical import same_container, same_env, same_mount, same_volume
from app.engine.config import EngineConfig
from app.engine.podview import as_dict, as_list, names, string_map
from app.engine.policyset import CompiledPolicy
from app.engine.render import RenderError
from app.engine.sidecars import SidecarChoice, sidecar_choice

ItemKind = Literal["container", "volume", "env", "mount", "label", "annotation", "pull-secret"]
Helpers = Mapping[str, Sequence[Mapping[str, Any]]]
RUN_TO_COMPLETION = ("Never", "OnFailure")


class Edit:
    """One change to the pod: add `item`, or replace the pod's item with the same key by it.
    (Built on the hot path: a plain class with `Final` attributes, see `select.PolicyDecision`.)"""

    __slots__ = ("container", "item", "key", "kind", "replaces", "slot", "where")

    def __init__(
        self,
        kind: ItemKind,
        key: str,
        item: Any,
        where: str = "",
        *,
        slot: int = -1,
        container: str = "",
        replaces: bool = False,
    ) -> None:
        self.kind: Final = kind
        self.key: Final = key  # name (container, volume, env, pull secret), mount path, label/annotation key
        self.item: Final = item
        self.where: Final = where  # containers: native | classic (sidecars) | first | last (init), containers
        self.slot: Final = slot  # env and mounts: the app container's index in spec.containers
        self.container: Final = container  # env and mounts: the app container's name
        self.replaces: Final = replaces

    def replacing(self) -> Edit:
        """This edit, replacing the pod's item with the same key."""
        return Edit(
            self.kind,
            self.key,
            self.item,
            self.where,
            slot=self.slot,
            container=self.container,
            replaces=True,
        )

    def describe(self) -> str:
        where = f" in container {self.container!r}" if self.container else ""
        return f"{self.kind} {self.key!r}{where}" + (" (differs)" if self.replaces else "")

    def __repr__(self) -> str:
        return f"Edit({self.kind!r}, {self.key!r}, replaces={self.replaces!r})"


class Plan:
    """What applying one rendered policy to a pod takes."""

    __slots__ = ("conflicts", "edits", "notes", "sidecars")

    def __init__(self, sidecars: SidecarChoice) -> None:
        self.sidecars: Final = sidecars
        self.edits: Final[list[Edit]] = []
        self.conflicts: Final[list[str]] = []
        self.notes: Final[list[str]] = []  # worth a warning, but not in the way

    @property
    def current(self) -> bool:
        """Nothing to add or replace and nothing in the way: the injection is present and current."""
        return not self.edits and not self.conflicts


def _last_by(items: object, key: str, wanted: Collection[str]) -> dict[str, dict[str, Any]]:
    """The last map of a list for each `wanted` value of its `key` (as for env vars, where the
    last of a name wins): one pass, keeping only the wanted ones."""
    found: dict[str, dict[str, Any]] = {}
    if type(items) is list:
        for item in items:
            if type(item) is dict:
                value = item.get(key)
                if type(value) is str and value in wanted:
                    found[value] = item
    return found


def _find(items: object, key: str, value: str) -> dict[str, Any] | None:
    """The first map of a list whose `key` is `value` (a scan: cheaper than an index for the few
    lookups of one policy)."""
    if type(items) is list:
        for item in items:
            if type(item) is dict and item.get(key) == value:
                return item
    return None


def _is_port(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def port_keys(container: Mapping[str, Any], *, host_network: bool) -> list[tuple[str, int, str]]:
    """(`port` | `hostPort`, number, protocol) for each port a container holds: its container ports
    (in the pod's network) and its host ports (on the node; every port, for a hostNetwork pod)."""
    keys: list[tuple[str, int, str]] = []
    for port in as_list(container.get("ports")):
        if not isinstance(port, dict):
            continue
        protocol = str(port.get("protocol") or "TCP")
        number, host = port.get("containerPort"), port.get("hostPort")
        if _is_port(number):
            keys.append(("port", number, protocol))
        if _is_port(host):
            keys.append(("hostPort", host, protocol))
        elif host_network and _is_port(number):
            keys.append(("hostPort", number, protocol))
    return keys


# What keys a policy's rendered spec gives items of each kind (for `_rendered_by`).
_RENDERED_KEYS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "container": (("initContainers", "name"), ("sidecars", "name"), ("containers", "name")),
    "volume": (("volumes", "name"),),
    "env": (("env", "name"),),
    "mount": (("volumeMounts", "mountPath"),),
}


def _rendered_by(specs: Sequence[Mapping[str, Any]], kind: str, key: str) -> bool:
    """Whether one of the rendered `specs` injects an item of `kind` with `key` (a claim never takes
    an item from a policy applied before it)."""
    for spec in specs:
        if kind in ("label", "annotation"):
            if key in spec.get(f"{kind}s", {}):
                return True
        elif any(
            item[field] == key
            for group, field in _RENDERED_KEYS.get(kind, ())
            for item in spec.get(group, [])
        ):
            return True
    return False


def _never(current: Any, wanted: Any) -> bool:
    return False


def _equal(current: Any, wanted: Any) -> bool:
    return bool(current == wanted)


def _running(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers that run side by side: app containers and native sidecars."""
    inits = [c for c in as_list(spec.get("initContainers")) if isinstance(c, dict)]
    apps = [c for c in as_list(spec.get("containers")) if isinstance(c, dict)]
    return [c for c in inits if c.get("restartPolicy") == "Always"] + apps


class _Planner:
    """Builds the `Plan` of one rendered policy against one pod."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        policy: CompiledPolicy,
        rendered: Mapping[str, Any],
        *,
        config: EngineConfig,
        claimed: bool,
        earlier: Sequence[Mapping[str, Any]],
        helpers: Helpers,
    ) -> None:
        self.spec = as_dict(pod.get("spec"))
        self.meta = as_dict(pod.get("metadata"))
        self.rendered = rendered
        self.config = config
        self.claimed = claimed
        self.earlier = earlier
        self.helpers = helpers
        self.host_network = self.spec.get("hostNetwork") is True
        self.plan = Plan(sidecar_choice(policy, config))
        self.replaced: set[str] = set()  # the pod's containers this plan replaces
        self._available: set[str] | None = None

    @property
    def available(self) -> set[str]:
        """The volumes the policy's mounts may name: its own and those it takes from the pod."""
        if self._available is None:
            volumes = self.rendered.get("volumes", [])
            self._available = {v["name"] for v in volumes} | set(self.rendered.get("podVolumes", []))
        return self._available

    def conflict(self, message: str) -> None:
        self.plan.conflicts.append(message)

    def reconcile(self, edit: Edit, current: Any, same: Callable[[Any, Any], bool]) -> bool:
        """Plan one item: add it (the pod lacks it), keep it (current), or replace it (claimed);
        False on a conflict."""
        if current is None:
            self.plan.edits.append(edit)
        elif not same(current, edit.item):
            if not self.claimed or _rendered_by(self.earlier, edit.kind, edit.key):
                return False
            self.plan.edits.append(edit.replacing())
        return True

    # --- volumes ------------------------------------------------------------------------------
    def volumes(self) -> None:
        if not (self.rendered.get("volumes") or self.rendered.get("podVolumes")):
            return
        present = self.spec.get("volumes")
        for volume in self.rendered.get("volumes", []):
            name = volume["name"]
            if not self.reconcile(Edit("volume", name, volume), _find(present, "name", name), same_volume):
                self.conflict(f"the pod already has a different volume named {name!r}")
        for name in self.rendered.get("podVolumes", []):
            if _find(present, "name", name) is None:
                self.conflict(f"the pod has no volume {name!r} (spec.podVolumes)")

    def check_mounts(self, container: Mapping[str, Any]) -> None:
        for mount in container.get("volumeMounts") or ():
            if mount["name"] not in self.available:
                self.conflict(
                    f"container {container['name']!r} mounts volume {mount['name']!r}, which the policy "
                    "neither defines (spec.volumes) nor takes from the pod (spec.podVolumes)"
                )

    # --- containers ---------------------------------------------------------------------------
    def containers(self) -> None:
        rendered = self.rendered
        sidecars, extras = rendered.get("sidecars", []), rendered.get("containers", [])
        inits = rendered.get("initContainers", [])
        if not (sidecars or inits or extras):
            return
        native = self.plan.sidecars.native
        if native:
            sidecars = [dict(c, restartPolicy="Always") for c in sidecars]
        started = []  # long-running containers this plan adds or replaces
        for container in sidecars:
            if self.container(container, "native" if native else "classic"):
                started.append(container)
        position = rendered.get("initContainerPosition", "first")
        for container in inits:
            self.container(container, position)
        for container in extras:
            if self.container(container, "containers"):
                started.append(container)
        if sidecars and not native:
            self.check_completion(sidecars)
        if started:
            self.check_ports(started)

    def find_container(self, name: str) -> tuple[str | None, dict[str, Any] | None]:
        """(group, container) of the pod's first container named `name`, or (None, None)."""
        for group in ("initContainers", "containers", "ephemeralContainers"):
            found = _find(self.spec.get(group), "name", name)
            if found is not None:
                return group, found
        return None, None

    def container(self, wanted: Mapping[str, Any], where: str) -> bool:
        """Plan one container; True when it is to be added or replaced."""
        self.check_mounts(wanted)
        name = wanted["name"]
        found, current = self.find_container(name)
        if found == "ephemeralContainers":
            self.conflict(f"the pod already has an ephemeral container named {name!r}")
            return False
        group = "containers" if where in ("containers", "classic") else "initContainers"
        if found == group and same_container(current, wanted, host_network=self.host_network):
            return False
        edits = len(self.plan.edits)
        if not self.reconcile(Edit("container", name, wanted, where), current, _never):
            self.conflict(f"the pod already has a container named {name!r}")
            return False
        if current is not None:
            self.replaced.add(name)
        return len(self.plan.edits) > edits

    def check_completion(self, sidecars: list[Mapping[str, Any]]) -> None:
        """A classic sidecar that does not exit by itself keeps a pod that must complete (a Job's)
        running for ever. Under `auto` that is a conflict (the cluster has no native sidecars); a
        classic mode someone chose explicitly is injected, with a warning."""
        restart = self.spec.get("restartPolicy")
        if restart not in RUN_TO_COMPLETION:
            return
        choice = self.plan.sidecars
        for sidecar in sidecars:
            if choice.explicit:
                self.plan.notes.append(
                    f"sidecar {sidecar['name']!r} is a classic container ({choice.reason}): unless it exits "
                    f"by itself, it keeps this pod (restartPolicy {restart}) from completing"
                )
            else:
                self.conflict(
                    f"sidecar {sidecar['name']!r} would be a classic container, which keeps this pod "
                    f"(restartPolicy {restart}) from completing; {choice.reason}"
                )

    def check_ports(self, started: list[Mapping[str, Any]]) -> None:
        if not any("ports" in container for container in started):
            return
        used: dict[tuple[str, int, str], str] = {}
        for container in _running(self.spec):
            name = container.get("name")
            if not (isinstance(name, str) and name in self.replaced):
                for key in port_keys(container, host_network=self.host_network):
                    used.setdefault(key, str(name))
        for wanted in started:
            keys = port_keys(wanted, host_network=self.host_network)
            self.port_clashes(wanted["name"], keys, used)
            for key in keys:
                used.setdefault(key, wanted["name"])
            node_ports = sorted({(number, protocol) for kind, number, protocol in keys if kind == "hostPort"})
            if self.host_network and node_ports:
                listed = ", ".join(f"{number}/{protocol}" for number, protocol in node_ports)
                plural = len(node_ports) > 1
                self.plan.notes.append(
                    f"container {wanted['name']!r} listens on the node's port{'s' if plural else ''} "
                    f"{listed} (the pod uses hostNetwork): another pod on the node that uses "
                    f"{'them' if plural else 'it'} will clash"
                )

    def port_clashes(self, name: str, keys: list[tuple[str, int, str]], used: Mapping[Any, str]) -> None:
        reported: set[tuple[int, str]] = set()
        for kind, number, protocol in keys:
            owner = used.get((kind, number, protocol))
            if owner is None or (number, protocol) in reported:
                continue
            reported.add((number, protocol))
            what = "hostPort" if kind == "hostPort" and not self.host_network else "port"
            clash = f"container {name!r} {what} {number}/{protocol} clashes with container {owner!r}"
            if self.host_network:
                self.conflict(f"{clash} on the node (the pod uses hostNetwork)")
            elif kind == "hostPort":
                self.conflict(f"{clash} on the node")
            else:
                self.conflict(f"{clash} (containers in a pod share localhost)")

    # --- the app containers: env and mounts ---------------------------------------------------
    def app_containers(self) -> list[tuple[int, dict[str, Any]]]:
        """The pod's own containers: not a container this plan replaces, nor one equal to a helper
        of a policy applied to the pod (as that policy renders it)."""
        if not (self.rendered.get("env") or self.rendered.get("volumeMounts")):
            return []
        found = []
        helpers, replaced = self.helpers, self.replaced
        for index, container in enumerate(as_list(self.spec.get("containers"))):
            if type(container) is not dict:
                continue
            name = container.get("name")
            if type(name) is str and (
                name in replaced or (name in helpers and self.is_helper(container, name))
            ):
                continue
            found.append((index, container))
        return found

    def is_helper(self, container: dict[str, Any], name: str) -> bool:
        return any(
            same_container(container, twin, host_network=self.host_network) for twin in self.helpers[name]
        )

    def mounts(self, targets: list[tuple[int, dict[str, Any]]]) -> None:
        mounts = []
        for mount in self.rendered.get("volumeMounts", []):
            if mount["name"] in self.available:
                mounts.append(mount)
            else:
                self.conflict(
                    f"volumeMount {mount['name']!r} names a volume the policy neither defines "
                    "(spec.volumes) nor takes from the pod (spec.podVolumes)"
                )
        for index, container in targets if mounts else ():
            name = str(container.get("name"))
            present = container.get("volumeMounts")
            for mount in mounts:
                path = mount["mountPath"]
                edit = Edit("mount", path, mount, slot=index, container=name)
                if not self.reconcile(edit, _find(present, "mountPath", path), same_mount):
                    self.conflict(f"container {name!r} already mounts something else at {path!r}")

    def env(self, targets: list[tuple[int, dict[str, Any]]]) -> None:
        env = self.rendered.get("env", [])
        keys = [var["name"] for var in env]
        wanted = tuple(keys) if len(keys) <= 8 else set(keys)  # a few names: a tuple is cheaper to ask
        for index, container in targets if env else ():
            name = str(container.get("name"))
            by_name = _last_by(container.get("env"), "name", wanted)
            for var in env:
                key = var["name"]
                if not self.reconcile(
                    Edit("env", key, var, slot=index, container=name), by_name.get(key), same_env
                ):
                    self.conflict(f"container {name!r} already sets env {key!r} differently")

    # --- metadata and pull secrets ------------------------------------------------------------
    def metadata(self) -> None:
        reserved = {self.config.status_annotation, self.config.inject_annotation}
        kinds: tuple[tuple[ItemKind, str], ...] = (("annotation", "annotations"), ("label", "labels"))
        for kind, key in kinds:
            if not self.rendered.get(key):
                continue
            current = string_map(self.meta.get(key))
            for name, value in self.rendered.get(key, {}).items():
                if kind == "annotation" and name in reserved:
                    self.plan.notes.append(f"annotation {name!r} is reserved for Podgraft; not set")
                elif not self.reconcile(Edit(kind, name, value), current.get(name), _equal):
                    self.conflict(f"the pod already has {kind} {name!r}={current[name]!r}")

    def pull_secrets(self) -> None:
        if not self.rendered.get("imagePullSecrets"):
            return
        present = names(as_list(self.spec.get("imagePullSecrets")))
        for secret in self.rendered.get("imagePullSecrets", []):
            if secret["name"] not in present:
                self.plan.edits.append(Edit("pull-secret", secret["name"], secret))


def plan_policy(
    pod: Mapping[str, Any],
    policy: CompiledPolicy,
    rendered: Mapping[str, Any],
    *,
    config: EngineConfig,
    claimed: bool = False,
    earlier: Sequence[Mapping[str, Any]] = (),
    helpers: Helpers | None = None,
) -> Plan:
    """What it takes to apply `rendered` (the policy rendered for this pod) to `pod`.

    `claimed`: the pod's status annotation names the policy, so differing items are replaced
    rather than conflicts, except those that `earlier` (the rendered specs of the policies applied
    before it in this admission) inject too.
    `helpers`: the classic sidecars and extra containers of every policy applied to the pod, by
    name (see `classic_helpers`); a container equal to one of them is not an app container and gets
    no env or mounts. Default: this policy's own.
    """
    planner = _Planner(
        pod,
        policy,
        rendered,
        config=config,
        claimed=claimed,
        earlier=earlier,
        helpers=helpers if helpers is not None else classic_helpers([(policy, rendered)], config),
    )
    planner.volumes()
    planner.containers()
    targets = planner.app_containers()
    planner.mounts(targets)
    planner.env(targets)
    planner.metadata()
    planner.pull_secrets()
    return planner.plan


def classic_helpers(
    rendered: Iterable[tuple[CompiledPolicy, Mapping[str, Any]]], config: EngineConfig
) -> dict[str, list[Mapping[str, Any]]]:
    """The containers the policies put among the pod's app containers (classic sidecars, extra
    containers), by name, as each policy renders them."""
    helpers: dict[str, list[Mapping[str, Any]]] = {}
    for policy, spec in rendered:
        classic = [] if sidecar_choice(policy, config).native else list(spec.get("sidecars", []))
        for container in [*classic, *spec.get("containers", [])]:
            helpers.setdefault(container["name"], []).append(container)
    return helpers


@dataclass(frozen=True, slots=True)
class InjectionState:
    """Whether a policy's injection is present and current in a pod and, if not, what is missing
    (items to add, or that differ) and what stands in the way."""

    policy: str
    current: bool
    missing: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    edits: tuple[Edit, ...] = ()  # what applying the policy would add, or (claimed) replace


def injection_state(
    pod: Mapping[str, Any],
    policy: CompiledPolicy,
    *,
    namespace: str,
    config: EngineConfig,
    alongside: Sequence[CompiledPolicy] = (),
    view: Mapping[str, Any] | None = None,
    claimed: bool = False,
) -> InjectionState:
    """Is `policy`'s injection present in `pod` and equal to what the policy renders for it?

    The status annotation plays no part in the comparison. `alongside`: the other policies applied
    to the pod, whose helpers are then not taken for app containers that lack this policy's env or
    mounts. `view`: the pod the templates render for (the audit passes the pod as it was admitted,
    `inputs.admission_view`); by default `pod` itself. `claimed`: plan as for a pod whose status
    names the policy, so that its same-named items that differ are edits that replace them (whose
    differences the audit can name) instead of conflicts.
    """
    shown = view if view is not None else pod
    try:
        rendered = policy.render(shown, namespace)
    except RenderError as exc:
        return InjectionState(policy.name, False, conflicts=(f"render error: {exc}",))
    others = []
    for other in alongside:
        try:
            others.append((other, other.render(shown, namespace)))
        except RenderError:
            continue
    helpers = classic_helpers([(policy, rendered), *others], config)
    plan = plan_policy(pod, policy, rendered, config=config, claimed=claimed, helpers=helpers)
    return InjectionState(
        policy.name,
        plan.current,
        missing=tuple(edit.describe() for edit in plan.edits),
        conflicts=tuple(plan.conflicts),
        edits=tuple(plan.edits),
    )
