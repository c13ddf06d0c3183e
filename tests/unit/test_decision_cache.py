"""The decision cache answers identical pods (replicas of one ReplicaSet) from one computation."""

from __future__ import annotations

from typing import Any

import orjson

from app.admission.cache import DecisionCache
from app.admission.decide import decide
from app.admission.review import AdmissionRequest, parse_review
from app.engine.config import EngineConfig
from app.sources.store import PolicyStore
from tests.conftest import EXAMPLE_POLICIES, make_review

CONFIG = EngineConfig()


def _store() -> PolicyStore:
    from app.sources.directory import read_directory

    store = PolicyStore()
    assert not store.replace_all(read_directory(EXAMPLE_POLICIES))
    return store


def _pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f-",
            "annotations": {"podgraft.io/inject": "wait-for-db", **annotations},
        },
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


def _request(pod: dict[str, Any], **review: Any) -> AdmissionRequest:
    return parse_review(orjson.dumps(make_review(pod, namespace="shop", **review)))


def test_identical_pods_are_decided_once_and_answered_with_their_own_uid() -> None:
    cache, store = DecisionCache(8), _store()
    first = cache.decide(_request(_pod()), policies=store.current(), config=CONFIG, namespace_labels=None)
    second_request = _request(_pod())
    second = cache.decide(second_request, policies=store.current(), config=CONFIG, namespace_labels=None)
    assert cache.hits == 1
    assert second.response["uid"] == second_request.uid != first.response["uid"]
    assert {**second.response, "uid": None} == {**first.response, "uid": None}
    uncached = decide(second_request, policies=store.current(), config=CONFIG, namespace_labels=None)
    assert second.response == uncached.response


def test_a_different_pod_namespace_labels_or_policy_set_is_a_miss() -> None:
    cache, store = DecisionCache(8), _store()
    policies = store.current()
    cache.decide(_request(_pod()), policies=policies, config=CONFIG, namespace_labels=None)
    cache.decide(_request(_pod(extra="1")), policies=policies, config=CONFIG, namespace_labels=None)
    cache.decide(_request(_pod()), policies=policies, config=CONFIG, namespace_labels={"team": "a"})
    store.replace_all({"x.yaml": (EXAMPLE_POLICIES / "wait-for-db.yaml").read_text()})
    cache.decide(_request(_pod()), policies=store.current(), config=CONFIG, namespace_labels=None)
    assert cache.hits == 0


def test_only_pod_creates_are_cached() -> None:
    cache, store = DecisionCache(8), _store()
    for _ in range(2):
        cache.decide(
            _request(_pod(), operation="UPDATE", sub_resource="ephemeralcontainers", old=_pod()),
            policies=store.current(),
            config=CONFIG,
            namespace_labels=None,
        )
        cache.decide(
            _request(_pod(), operation="DELETE"),
            policies=store.current(),
            config=CONFIG,
            namespace_labels=None,
        )
    assert cache.hits == 0


def test_least_recently_used_entries_are_dropped() -> None:
    cache, store = DecisionCache(2), _store()
    policies = store.current()
    for value in ("a", "b", "a", "c", "a", "b"):
        cache.decide(_request(_pod(v=value)), policies=policies, config=CONFIG, namespace_labels=None)
    # a miss, b miss, a hit, c miss (drops b), a hit, b miss
    assert cache.hits == 2


def test_size_zero_disables_the_cache() -> None:
    cache, store = DecisionCache(0), _store()
    for _ in range(3):
        cache.decide(_request(_pod()), policies=store.current(), config=CONFIG, namespace_labels=None)
    assert cache.hits == 0


def test_an_entry_keeps_the_answer_and_what_logs_read_but_not_the_pod() -> None:
    """The patch's operations and the patched pod hold the pod alive: 256 entries of them made the
    collector's pauses the tail of the latency (and the Events queue's, holding the results until
    its drain). The first replica gets what the entry keeps, as the others do."""
    cache, store = DecisionCache(8), _store()
    request = _request(_pod())
    uncached = decide(request, policies=store.current(), config=CONFIG, namespace_labels=None)
    assert uncached.result is not None
    assert uncached.result.patch
    assert uncached.result.mutated is not None
    first = cache.decide(request, policies=store.current(), config=CONFIG, namespace_labels=None)
    assert first.result is not None
    assert (first.result.patch, first.result.mutated) == ([], None)
    assert first.response == uncached.response  # the patch is in the answer, encoded
    assert (first.result.injected, first.result.warnings, first.result.status) == (
        uncached.result.injected,
        uncached.result.warnings,
        uncached.result.status,
    )
    second = cache.decide(_request(_pod()), policies=store.current(), config=CONFIG, namespace_labels=None)
    assert cache.hits == 1
    assert second.result is first.result
    assert (second.outcome, second.result.injected, second.result.warnings) == (
        first.outcome,
        first.result.injected,
        first.result.warnings,
    )
    assert {**second.response, "uid": ""} == {**first.response, "uid": ""}
