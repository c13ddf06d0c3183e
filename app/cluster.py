"""Cluster mode: policies from watched ConfigMaps, a namespace cache, version discovery, caBundle patching.

Everything that talks to the Kubernetes API lives here and uses the official (synchronous) client.
Blocking list/watch calls run in daemon threads, one per watched namespace plus one for Namespaces;
they hand what they see to the event loop through a queue, so the loop is never blocked and every
change to the `PolicyStore` happens on one thread, in order.

A list/watch (`ListWatch`) lists, then watches from the list's resourceVersion; a watch that ends
is resumed from the last resourceVersion seen (bookmarks included); `410 Gone` means that version
is too old, so it lists again; any other failure is retried with capped exponential backoff. It
never dies: only `stop()` ends it.

Each data key of each policy ConfigMap is one source key of the store (`configmap NS/NAME KEY`),
validated on its own. A rejected key is logged and reported as a `Warning` Event on its ConfigMap
(reason `PolicyRejected`); the store keeps the last good version of its policies in force.
Deleting a ConfigMap (or removing its policy label) removes its keys. The first full listing of
every watched namespace (and of the Namespaces) is one `replace_all(full=True)`, which is what
turns `/readyz` ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from app.policy.sources import NamespaceLookup, PolicySource
from app.policy.store import PolicyStore, SourceText
from app.settings import Settings

log = logging.getLogger("podgraft.cluster")

EVENT_REASON = "PolicyRejected"
COMPONENT = "podgraft"
MAX_EVENT_MESSAGE = 1024  # what the API accepts for an Event's message (note)
WATCH_TIMEOUT_SECONDS = 300  # the server ends a watch after this; it is resumed from its resourceVersion
LIST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds
WATCH_TIMEOUT = (10.0, WATCH_TIMEOUT_SECONDS + 30.0)
CALL_TIMEOUT = (10.0, 30.0)
HTTP_GONE = 410
MIN_HEALTHY_WATCH_SECONDS = 1.0  # a watch that ends quicker than this (without events) counts as a failure

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The Kubernetes API could not be used for something Podgraft cannot start without."""


# --- backoff --------------------------------------------------------------------------------------


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: initial, initial*factor, ... up to `cap` seconds.

    Each delay is scaled by a random factor in [1 - jitter, 1] so that many replicas that lost the
    API server at the same moment do not come back in lockstep.
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    rand: Callable[[], float] = random.random
    attempts: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return delay * (1.0 - self.jitter * self.rand())

    def reset(self) -> None:
        self.attempts = 0


# --- list + watch in a thread ---------------------------------------------------------------------

Lister = Callable[[], tuple[list[T], str]]  # () -> (objects, resourceVersion of the list)
# resourceVersion -> (event type, object or None for a bookmark, resourceVersion after this event)
Watcher = Callable[[str], Iterable[tuple[str, T | None, str]]]


def _api_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


class ListWatch(Generic[T]):
    """List, then watch from that resourceVersion, forever, in a daemon thread (see the module doc).

    `on_list(objects)` gets every full listing (the first one and each re-list after 410 Gone);
    `on_event(type, object)` gets ADDED, MODIFIED and DELETED. Both are called on the thread.
    """

    def __init__(
        self,
        name: str,
        *,
        lister: Lister[T],
        watcher: Watcher[T],
        on_list: Callable[[list[T]], None],
        on_event: Callable[[str, T], None],
        interrupt: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.lister = lister
        self.watcher = watcher
        self.on_list = on_list
        self.on_event = on_event
        self.interrupt = interrupt
        self.backoff = backoff or Backoff()
        self.lists = 0  # how many full listings were delivered (for tests and logs)
        self.version: str | None = None  # resourceVersion to resume from; None: list first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op while it runs). A stopped ListWatch cannot be started again."""
        if self._stop.is_set():
            raise RuntimeError(f"the {self.name} list/watch was stopped; make a new one")
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.run, name=f"podgraft-watch {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; a watch blocked on the network is interrupted when possible."""
        self._stop.set()
        if self.interrupt is not None:
            try:
                self.interrupt()
            except Exception:  # best effort: the thread is a daemon and checks the flag anyway
                log.debug("interrupting the %s watch failed", self.name, exc_info=True)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """The loop; runs until `stop()`. Public so that tests can drive it on their own thread."""
        while not self._stop.is_set():
            try:
                if self.version is None:
                    objects, version = self.lister()
                    if self._stop.is_set():
                        return
                    self.lists += 1
                    self.on_list(objects)
                    self.version = version
                    self.backoff.reset()
                self._watch(self.version)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if _api_status(exc) == HTTP_GONE:
                    log.info(
                        "watch resourceVersion expired (410 Gone); listing again", extra={"watch": self.name}
                    )
                    self.version = None
                    continue
                delay = self.backoff.next()
                log.warning(
                    "list/watch failed; retrying",
                    extra={"watch": self.name, "error": _describe(exc), "retry_in_seconds": round(delay, 2)},
                )
                self._stop.wait(delay)

    def _watch(self, version: str) -> None:
        """One watch from `version`; `self.version` follows every event (a retry resumes from there)."""
        started = time.monotonic()
        events = 0
        for kind, obj, new_version in self.watcher(version):
            if self._stop.is_set():
                return
            if obj is not None and kind in ("ADDED", "MODIFIED", "DELETED"):
                events += 1
                self.on_event(kind, obj)
            if new_version:
                self.version = new_version
        if events == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH_SECONDS:
            delay = self.backoff.next()  # the server hung up at once: do not spin
            log.warning(
                "watch ended immediately; retrying",
                extra={"watch": self.name, "retry_in_seconds": round(delay, 2)},
            )
            self._stop.wait(delay)
        else:
            self.backoff.reset()


def _describe(exc: BaseException) -> str:
    status = _api_status(exc)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:500]


# --- the Kubernetes client ------------------------------------------------------------------------


def load_configuration(kubeconfig: Path | None) -> Any:
    """A client Configuration: the given kubeconfig, else in-cluster, else the default kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def _api_client(configuration: Any) -> Any:
    from kubernetes import client

    api = client.ApiClient(configuration)
    api.user_agent = COMPONENT
    return api


def kube_list_watch(
    list_function: Callable[..., Any],
    *args: Any,
    convert: Callable[[Any], T],
    **kwargs: Any,
) -> tuple[Lister[T], Watcher[T], Callable[[], None]]:
    """A lister, a watcher and an interrupt for one `list_*` function of the official client."""
    from kubernetes import watch

    current: list[Any] = []

    def lister() -> tuple[list[T], str]:
        result = list_function(*args, _request_timeout=LIST_TIMEOUT, **kwargs)
        return [convert(item) for item in result.items or []], str(result.metadata.resource_version or "")

    def watcher(version: str) -> Iterator[tuple[str, T | None, str]]:
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        current[:] = [stream]
        try:
            for event in stream.stream(
                list_function,
                *args,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,  # also turns off the client's own retries
                _request_timeout=WATCH_TIMEOUT,
                **kwargs,
            ):
                kind = str(event.get("type"))
                if kind == "BOOKMARK":
                    yield kind, None, str(stream.resource_version or version)
                    continue
                obj = event["object"]
                yield kind, convert(obj), str(getattr(obj.metadata, "resource_version", None) or version)
        finally:
            current.clear()

    def interrupt() -> None:
        for stream in list(current):
            stream.stop()

    return lister, watcher, interrupt


# --- policy ConfigMaps: pure state ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyConfigMap:
    """What Podgraft needs of a policy ConfigMap."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    data: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, obj: Any) -> PolicyConfigMap:
        meta = obj.metadata
        return cls(
            namespace=str(meta.namespace or ""),
            name=str(meta.name or ""),
            uid=str(meta.uid or ""),
            resource_version=str(meta.resource_version or ""),
            data=dict(obj.data or {}),
        )


def source_key(namespace: str, name: str, key: str) -> str:
    """The store's key for one data key of one ConfigMap."""
    return f"configmap {namespace}/{name} {key}"


class ConfigMapState:
    """The policy texts Podgraft has seen, per ConfigMap; each update returns the store delta.

    Only keys whose text changed are in a delta (None for a removed key), so an edit of one key
    recompiles that key alone and an unchanged broken key is not reported again.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple[str, str], PolicyConfigMap] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def texts(self) -> dict[str, SourceText]:
        """Every key of every ConfigMap (for a full `replace_all`)."""
        return {
            source_key(cm.namespace, cm.name, key): text
            for cm in self._maps.values()
            for key, text in cm.data.items()
        }

    def upsert(self, cm: PolicyConfigMap) -> dict[str, SourceText]:
        old = self._maps.get((cm.namespace, cm.name))
        self._maps[(cm.namespace, cm.name)] = cm
        old_data: Mapping[str, str] = old.data if old is not None else {}
        delta: dict[str, SourceText] = {
            source_key(cm.namespace, cm.name, key): None for key in old_data if key not in cm.data
        }
        for key, text in cm.data.items():
            if old_data.get(key) != text:
                delta[source_key(cm.namespace, cm.name, key)] = text
        return delta

    def delete(self, namespace: str, name: str) -> dict[str, SourceText]:
        old = self._maps.pop((namespace, name), None)
        if old is None:
            return {}
        return {source_key(namespace, name, key): None for key in old.data}

    def resync(self, namespace: str, listed: Iterable[PolicyConfigMap]) -> dict[str, SourceText]:
        """A full listing of one namespace: ConfigMaps missing from it were deleted meanwhile."""
        listed = list(listed)
        names = {cm.name for cm in listed}
        delta: dict[str, SourceText] = {}
        for ns, name in [k for k in self._maps if k[0] == namespace and k[1] not in names]:
            delta.update(self.delete(ns, name))
        for cm in listed:
            delta.update(self.upsert(cm))
        return delta

    def owner(self, key: str) -> tuple[PolicyConfigMap, str] | None:
        """The ConfigMap and data key behind a source key."""
        for cm in self._maps.values():
            prefix = source_key(cm.namespace, cm.name, "")
            if key.startswith(prefix) and key[len(prefix) :] in cm.data:
                return cm, key[len(prefix) :]
        return None


def rejection_message(cm: PolicyConfigMap, key: str, error: str, *, kept: bool) -> str:
    """The Event message: which ConfigMap and key, what is wrong (the store names document and field)."""
    outcome = (
        "the last good version of its policies stays in force"
        if kept
        else "no earlier version of it is in force"
    )
    message = f"ConfigMap {cm.namespace}/{cm.name} key {key!r} rejected: {error}; {outcome}"
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    return message


def rejection_event(cm: PolicyConfigMap, message: str, *, now: dt.datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Warning Event on the ConfigMap (what `kubectl describe configmap` shows)."""
    timestamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{cm.name}.", "namespace": cm.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": cm.namespace,
            "name": cm.name,
            "uid": cm.uid,
            "resourceVersion": cm.resource_version,
        },
        "reason": EVENT_REASON,
        "message": message,
        "type": "Warning",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


class ErrorTracker:
    """Which rejections were already reported, so each (key, message) is reported once."""

    def __init__(self) -> None:
        self._reported: dict[str, str] = {}

    def fresh(self, errors: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
        """Errors of this update not reported yet. `current` is every error the store still holds."""
        for key in [k for k in self._reported if k not in current]:
            del self._reported[key]  # fixed or removed since: a new failure is news again
        new = {key: message for key, message in errors.items() if self._reported.get(key) != message}
        self._reported.update(new)
        return new


# --- policy ConfigMaps: the source ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigMapsListed:
    """A full listing of one namespace's policy ConfigMaps."""

    namespace: str
    configmaps: list[PolicyConfigMap]


@dataclass(frozen=True, slots=True)
class ConfigMapChanged:
    """One watch event about a policy ConfigMap."""

    kind: str  # ADDED | MODIFIED | DELETED
    configmap: PolicyConfigMap


ConfigMapMessage = ConfigMapsListed | ConfigMapChanged
EventPoster = Callable[[PolicyConfigMap, str], None]  # blocking; called on a worker thread


class ConfigMapSource:
    """Cluster mode: watch ConfigMaps labelled `<policy_label>=true` in the given namespaces."""

    def __init__(
        self,
        namespaces: Sequence[str],
        *,
        configuration: Any = None,
        label: str = "podgraft.io/policy",
        namespace_cache: NamespaceCache | None = None,
        post_event: EventPoster | None = None,
        watch_factory: Callable[[str, Callable[[ConfigMapMessage], None]], ListWatch[PolicyConfigMap]]
        | None = None,
    ) -> None:
        self.namespaces = list(dict.fromkeys(namespaces))
        self.configuration = configuration
        self.selector = f"{label}=true"
        self.namespace_cache = namespace_cache
        self.post_event = post_event if post_event is not None else self._post_event
        self.watch_factory = watch_factory or self._kube_watch
        self.state = ConfigMapState()
        self.errors = ErrorTracker()
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._core: Any = None

    async def run(self, store: PolicyStore) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[ConfigMapMessage] = asyncio.Queue()

        def post(message: ConfigMapMessage) -> None:  # called on watch threads
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(inbox.put_nowait, message)

        self.state = ConfigMapState()
        watches = [self.watch_factory(ns, post) for ns in self.namespaces]
        if self.namespace_cache is not None:
            self.namespace_cache.start()
        for item in watches:
            item.start()
        try:
            await self._first_sync(store, inbox)
            while True:
                self._handle(store, await inbox.get())
        except asyncio.CancelledError:
            if self.namespace_cache is not None:  # shutting down; after a failure it keeps running
                self.namespace_cache.stop()
            raise
        finally:
            for item in watches:
                item.stop()

    async def _first_sync(self, store: PolicyStore, inbox: asyncio.Queue[ConfigMapMessage]) -> None:
        """Wait for a listing of every namespace (and the Namespaces), then load all at once."""
        pending = set(self.namespaces)
        started = time.monotonic()
        while pending:
            try:
                message = await asyncio.wait_for(inbox.get(), timeout=10)
            except TimeoutError:
                log.warning(
                    "still waiting for the first listing of policy ConfigMaps",
                    extra={"namespaces": sorted(pending), "seconds": int(time.monotonic() - started)},
                )
                continue
            self._stage(message)
            if isinstance(message, ConfigMapsListed):
                pending.discard(message.namespace)
        if self.namespace_cache is not None:
            waited = 0
            while not self.namespace_cache.synced.is_set():
                while not inbox.empty():
                    self._stage(inbox.get_nowait())
                await asyncio.sleep(0.05)
                waited += 1
                if waited % 200 == 0:
                    log.warning(
                        "still waiting for the first listing of Namespaces", extra={"seconds": waited // 20}
                    )
            while not inbox.empty():
                self._stage(inbox.get_nowait())
        errors = store.replace_all(self.state.texts(), full=True)
        self._report(store, errors)
        log.info(
            "policy ConfigMaps synced",
            extra={
                "namespaces": self.namespaces,
                "configmaps": len(self.state),
                "policies": len(store.current()),
                "rejected": len(errors),
            },
        )

    def _stage(self, message: ConfigMapMessage) -> dict[str, SourceText]:
        if isinstance(message, ConfigMapsListed):
            return self.state.resync(message.namespace, message.configmaps)
        cm = message.configmap
        if message.kind == "DELETED":
            return self.state.delete(cm.namespace, cm.name)
        return self.state.upsert(cm)

    def _handle(self, store: PolicyStore, message: ConfigMapMessage) -> None:
        delta = self._stage(message)
        if not delta:
            return
        errors = store.replace_all(delta, full=False)
        removed = sorted(key for key, text in delta.items() if text is None)
        if removed:
            log.info("policy ConfigMap keys removed", extra={"sources": removed})
        changed = sorted(key for key, text in delta.items() if text is not None and key not in errors)
        if changed:
            log.info("policy ConfigMap keys loaded", extra={"sources": changed})
        self._report(store, errors)

    def _report(self, store: PolicyStore, errors: Mapping[str, str]) -> None:
        fresh = self.errors.fresh(errors, store.errors())
        if not fresh:
            return
        in_force = {policy.source for policy in store.current().by_name.values()}
        for key, error in sorted(fresh.items()):
            kept = key in in_force
            log.error(
                "policy ConfigMap key rejected",
                extra={"source": key, "error": error, "last_good_version_in_force": kept},
            )
            owner = self.state.owner(key)
            if owner is None:
                continue
            cm, data_key = owner
            message = rejection_message(cm, data_key, error, kept=kept)
            task = asyncio.get_running_loop().create_task(self._post_in_thread(cm, message))
            self._event_tasks.add(task)
            task.add_done_callback(self._event_tasks.discard)

    async def _post_in_thread(self, cm: PolicyConfigMap, message: str) -> None:
        try:
            await asyncio.to_thread(self.post_event, cm, message)
        except Exception as exc:  # an Event is a courtesy: never let it break the source
            log.warning(
                "could not record an Event on the ConfigMap",
                extra={"configmap": f"{cm.namespace}/{cm.name}", "error": _describe(exc)},
            )

    # --- Kubernetes wiring (replaced in unit tests) ---

    def _core_api(self) -> Any:
        from kubernetes import client

        if self._core is None:
            self._core = client.CoreV1Api(_api_client(self.configuration))
        return self._core

    def _post_event(self, cm: PolicyConfigMap, message: str) -> None:
        body = rejection_event(cm, message, now=dt.datetime.now(dt.UTC), instance=socket.gethostname())
        self._core_api().create_namespaced_event(cm.namespace, body, _request_timeout=CALL_TIMEOUT)

    def _kube_watch(
        self, namespace: str, post: Callable[[ConfigMapMessage], None]
    ) -> ListWatch[PolicyConfigMap]:
        from kubernetes import client

        core = client.CoreV1Api(_api_client(self.configuration))  # one connection pool per thread
        lister, watcher, interrupt = kube_list_watch(
            core.list_namespaced_config_map,
            namespace,
            label_selector=self.selector,
            convert=PolicyConfigMap.from_api,
        )
        return ListWatch(
            f"configmaps {namespace}",
            lister=lister,
            watcher=watcher,
            interrupt=interrupt,
            on_list=lambda items: post(ConfigMapsListed(namespace, items)),
            on_event=lambda kind, cm: post(ConfigMapChanged(kind, cm)),
        )


# --- namespaces -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamespaceLabels:
    name: str
    labels: Mapping[str, str]

    @classmethod
    def from_api(cls, obj: Any) -> NamespaceLabels:
        return cls(name=str(obj.metadata.name or ""), labels=dict(obj.metadata.labels or {}))


class NamespaceCache:
    """The labels of every Namespace, kept current by a list/watch. Implements `NamespaceLookup`.

    `labels(name)` is None for a namespace not seen (yet): the server then trusts the webhook
    configuration's namespaceSelector, as in local mode.
    """

    def __init__(
        self,
        configuration: Any = None,
        *,
        watch_factory: Callable[[NamespaceCache], ListWatch[NamespaceLabels]] | None = None,
    ) -> None:
        self.configuration = configuration
        self.synced = threading.Event()
        self._labels: dict[str, Mapping[str, str]] = {}
        self._watch = (watch_factory or NamespaceCache._kube_watch)(self)

    def labels(self, name: str) -> Mapping[str, str] | None:
        return self._labels.get(name)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def replace(self, namespaces: list[NamespaceLabels]) -> None:
        self._labels = {ns.name: ns.labels for ns in namespaces}  # one reference swap
        if not self.synced.is_set():
            log.info("namespaces synced", extra={"namespaces": len(namespaces)})
        self.synced.set()

    def update(self, kind: str, namespace: NamespaceLabels) -> None:
        if kind == "DELETED":
            self._labels.pop(namespace.name, None)
        else:
            self._labels[namespace.name] = namespace.labels

    def _kube_watch(self) -> ListWatch[NamespaceLabels]:
        from kubernetes import client

        core = client.CoreV1Api(_api_client(self.configuration))
        lister, watcher, interrupt = kube_list_watch(core.list_namespace, convert=NamespaceLabels.from_api)
        return ListWatch(
            "namespaces",
            lister=lister,
            watcher=watcher,
            interrupt=interrupt,
            on_list=self.replace,
            on_event=self.update,
        )


# --- version discovery ----------------------------------------------------------------------------


def discover_version(
    configuration: Any, *, deadline_seconds: float = 30.0, backoff: Backoff | None = None
) -> str:
    """The API server's gitVersion (e.g. v1.35.4), retried with backoff until `deadline_seconds`."""
    from kubernetes import client

    backoff = backoff or Backoff(initial=0.5, cap=5.0)
    deadline = time.monotonic() + deadline_seconds
    api = client.VersionApi(_api_client(configuration))
    while True:
        try:
            info = api.get_code(_request_timeout=CALL_TIMEOUT)
            return str(info.git_version)
        except Exception as exc:
            delay = backoff.next()
            if time.monotonic() + delay > deadline:
                raise ClusterError(
                    f"cannot ask the API server for its version ({_describe(exc)}); "
                    "set PODGRAFT_KUBERNETES_VERSION (or --kubernetes-version) to skip the question"
                ) from exc
            log.warning(
                "asking the API server for its version failed; retrying",
                extra={"error": _describe(exc), "retry_in_seconds": round(delay, 2)},
            )
            time.sleep(delay)


# --- wiring for `podgraft serve` ------------------------------------------------------------------


def cluster_sources(settings: Settings) -> tuple[list[PolicySource], NamespaceLookup, Settings]:
    """The ConfigMap source and the namespace cache; asks the API server for its version unless the
    version was set explicitly (it decides what `sidecarMode: auto` means)."""
    try:
        configuration = load_configuration(settings.kubeconfig)
    except Exception as exc:
        raise ClusterError(f"no Kubernetes API configuration: {exc}") from exc
    if "kubernetes_version" not in settings.model_fields_set:
        version = discover_version(configuration)
        log.info("kubernetes version discovered", extra={"kubernetes_version": version})
        settings = settings.model_copy(update={"kubernetes_version": version})
    namespaces = NamespaceCache(configuration)
    source = ConfigMapSource(
        settings.watched_policy_namespaces(),
        configuration=configuration,
        label=settings.policy_label,
        namespace_cache=namespaces,
    )
    return [source], namespaces, settings


# --- caBundle -------------------------------------------------------------------------------------


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: str) -> list[dict[str, Any]]:
    """JSON Patch setting every webhook's clientConfig.caBundle to `bundle`; [] when all are current.

    Each change is guarded by a `test` of the webhook's name, so a concurrent reorder fails the
    patch instead of writing the wrong entry.
    """
    webhooks = configuration.get("webhooks") or []
    if not webhooks:
        name = (configuration.get("metadata") or {}).get("name", "?")
        raise ValueError(f"MutatingWebhookConfiguration {name} has no webhooks")
    ops: list[dict[str, Any]] = []
    for index, webhook in enumerate(webhooks):
        client_config = webhook.get("clientConfig") or {}
        if client_config.get("caBundle") == bundle:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        if "clientConfig" not in webhook:
            ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig", "value": {}})
        ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle})
    return ops


def read_ca_bundle(ca_path: Path) -> str:
    """The base64 caBundle of a PEM file holding one or more CA certificates (checked)."""
    from cryptography import x509

    data = Path(ca_path).read_bytes()
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{ca_path} holds no PEM certificate: {exc}") from None
    if not certificates:
        raise ValueError(f"{ca_path} holds no PEM certificate")
    return base64.b64encode(data).decode()


def patch_ca_bundle(name: str, ca_path: Path, *, kubeconfig: Path | None = None, attempts: int = 3) -> bool:
    """Set the caBundle of every webhook of MutatingWebhookConfiguration `name`. True if it changed."""
    import orjson
    from kubernetes import client

    bundle = read_ca_bundle(ca_path)
    api: Any = client.AdmissionregistrationV1Api(_api_client(load_configuration(kubeconfig)))
    for attempt in range(1, attempts + 1):
        response = api.read_mutating_webhook_configuration(
            name, _preload_content=False, _request_timeout=CALL_TIMEOUT
        )
        ops = ca_bundle_patch(orjson.loads(response.data), bundle)
        if not ops:
            return False
        try:
            api.patch_mutating_webhook_configuration(
                name, ops, _content_type="application/json-patch+json", _request_timeout=CALL_TIMEOUT
            )
            return True
        except Exception as exc:
            if _api_status(exc) in (409, 422) and attempt < attempts:  # changed meanwhile: read again
                continue
            raise
    return True  # not reached
