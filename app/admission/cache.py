"""The decision cache: identical replica pods are decided once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

import orjson

from app.admission.decide import Verdict, decide, request_namespace
from app.admission.review import AdmissionRequest
from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult
from app.engine.policyset import PolicySet

MAX_KEPT_BYTES = 16 * 1024  # a pod's JSON past this is keyed by its digest
Key = tuple[bool, bytes, str, bytes | None]  # (digested, the pod's JSON or digest, namespace, labels)


class DecisionCache:
    """Recent Pod CREATE decisions, keyed by everything the engine reads.

    The pods of one ReplicaSet reach the webhook byte-identical (no name yet, the same
    `generateName`, labels, owner and spec), so a scale-up of N replicas is decided once and
    answered N times. The key is the pod object as JSON (or, past `MAX_KEPT_BYTES`, its BLAKE2b
    digest, so that the cache holds at most `size` x 16 KiB of keys), the namespace and the
    namespace's labels; an entry is only used with the very `PolicySet` it was computed with, so a
    policy change invalidates everything at once. Least recently used entries are dropped past `size`.
    (A key of the JSON itself costs a seventh of its digest: the dict hashes it with SipHash and
    compares it byte for byte on a hit, where BLAKE2b is CPython's reference C code.)
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.hits = 0
        self._entries: OrderedDict[Key, tuple[PolicySet, Verdict]] = OrderedDict()

    def _key(self, request: AdmissionRequest, namespace_labels: Mapping[str, str] | None) -> Key:
        pod = orjson.dumps(request.object)
        digested = len(pod) > MAX_KEPT_BYTES
        if digested:
            pod = hashlib.blake2b(pod, digest_size=20).digest()
        labels = None if namespace_labels is None else orjson.dumps(sorted(namespace_labels.items()))
        return digested, pod, request_namespace(request), labels

    def decide(
        self,
        request: AdmissionRequest,
        *,
        policies: PolicySet,
        config: EngineConfig,
        namespace_labels: Mapping[str, str] | None,
    ) -> Verdict:
        """`decide()`, answered from the cache when the same pod was decided with the same policies.
        Every answer carries what an entry keeps (`_kept`): the server reads no more, and the Events
        queue holds the result until its drain."""
        if self.size <= 0 or request.operation != "CREATE" or request.sub_resource or not request.is_pod():
            return _kept(decide(request, policies=policies, config=config, namespace_labels=namespace_labels))
        try:
            key = self._key(request, namespace_labels)
        except (TypeError, orjson.JSONEncodeError):  # not re-serialisable (huge ints...): no caching
            return _kept(decide(request, policies=policies, config=config, namespace_labels=namespace_labels))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is policies:
            self._entries.move_to_end(key)
            self.hits += 1
            cached = entry[1]
            return Verdict({**cached.response, "uid": request.uid}, cached.outcome, cached.result)
        decision = _kept(decide(request, policies=policies, config=config, namespace_labels=namespace_labels))
        self._entries[key] = (policies, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return decision  # the same result object as the replicas' to come (Events count them by it)


def _kept(decision: Verdict) -> Verdict:
    """What an entry keeps: the response and what metrics, logs and Events read, not the patch's operations
    (the response has them, encoded) nor the patched pod, which hold the pod alive: a full cache
    would keep 256 pods for the garbage collector to walk, and the tail latency paid for it."""
    result = decision.result
    if result is None or not result.patch:
        return decision
    slim = InjectionResult(
        warnings=result.warnings,
        denial=result.denial,
        decisions=result.decisions,
        injected=result.injected,
        skip_reason=result.skip_reason,
        skip_code=result.skip_code,
        status=result.status,
    )
    return Verdict(decision.response, decision.outcome, slim)
