"""Which workload a pod's Events go on: the controller reference it carries at admission, followed
through a ReplicaSet (Deployment) or a Job (CronJob) with one cached GET."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ReadTimeoutError

from app.cluster.events import ObjectRef
from app.cluster.owners import OwnerCache, OwnerUnavailable, controller_reference
from tests.unit.events_support import FakeEventsAPI, owned

RS = ObjectRef("ReplicaSet", "shop", "web-7d9f8c6b5", "rs-uid", "", "apps/v1")
JOB = ObjectRef("Job", "shop", "backup-29112233", "job-uid", "", "batch/v1")
DEPLOYMENT = ObjectRef("Deployment", "shop", "web", "deploy-uid", "", "apps/v1")
CRONJOB = ObjectRef("CronJob", "shop", "backup", "cron-uid", "", "batch/v1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _api() -> FakeEventsAPI:
    return FakeEventsAPI(
        {
            ("ReplicaSet", "shop", RS.name): owned(
                "ReplicaSet", RS.name, "rs-uid", ("apps/v1", "Deployment", "web", "deploy-uid")
            ),
            ("Job", "shop", JOB.name): owned(
                "Job", JOB.name, "job-uid", ("batch/v1", "CronJob", "backup", "cron-uid")
            ),
        }
    )


def test_the_controller_reference_is_the_one_marked_controller() -> None:
    metadata = {
        "generateName": "web-7d9f8c6b5-",
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-me", "uid": "x"},
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": RS.name,
                "uid": "rs-uid",
                "controller": True,
            },
        ],
    }
    assert controller_reference(metadata, "shop") == RS
    assert controller_reference({"name": "bare"}, "shop") is None
    assert (
        controller_reference(
            {"ownerReferences": [{"kind": "ReplicaSet", "name": "x", "controller": "yes"}]}, "shop"
        )
        is None
    )
    assert controller_reference({"ownerReferences": "garbage"}, "shop") is None


@pytest.mark.parametrize(
    ("ref", "regarding"),
    [
        pytest.param(RS, DEPLOYMENT, id="replicaset-to-deployment"),
        pytest.param(JOB, CRONJOB, id="job-to-cronjob"),
    ],
)
def test_a_replicaset_or_job_is_followed_to_its_controller_with_it_as_related(
    ref: ObjectRef, regarding: ObjectRef
) -> None:
    api = _api()
    cache = OwnerCache(api.get)
    assert cache.workload(ref) == (regarding, ref)


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(ObjectRef("StatefulSet", "shop", "db", "sts-uid", "", "apps/v1"), id="statefulset"),
        pytest.param(ObjectRef("DaemonSet", "shop", "agent", "ds-uid", "", "apps/v1"), id="daemonset"),
        pytest.param(ObjectRef("Rollout", "shop", "web", "r-uid", "", "argoproj.io/v1alpha1"), id="custom"),
        pytest.param(ObjectRef("ReplicaSet", "shop", "x", "u", "", "example.com/v1"), id="another-group"),
    ],
)
def test_other_owners_are_the_workload_without_a_get(ref: ObjectRef) -> None:
    api = _api()
    assert OwnerCache(api.get).workload(ref) == (ref, None)
    assert api.calls == []


def test_answers_are_cached_until_their_ttl_and_the_cache_is_bounded() -> None:
    api, clock = _api(), Clock()
    cache = OwnerCache(api.get, size=1, ttl=300, clock=clock)
    for _ in range(100):  # a scale-up: one GET
        assert cache.workload(RS) == (DEPLOYMENT, RS)
    assert cache.gets == 1
    clock.now += 301
    cache.workload(RS)
    assert cache.gets == 2
    cache.workload(JOB)  # evicts the ReplicaSet (size 1)
    cache.workload(RS)
    assert cache.gets == 4
    assert [verb for verb, _ in api.calls] == ["get"] * 4


def test_a_replicaset_without_a_controller_is_the_workload() -> None:
    api = FakeEventsAPI({("ReplicaSet", "shop", RS.name): owned("ReplicaSet", RS.name, "rs-uid", None)})
    assert OwnerCache(api.get).workload(RS) == (RS, None)


def test_a_replicaset_of_the_same_name_but_another_uid_is_not_the_pods_owner() -> None:
    api = FakeEventsAPI(
        {
            ("ReplicaSet", "shop", RS.name): owned(
                "ReplicaSet", RS.name, "new-uid", ("apps/v1", "Deployment", "web", "d")
            )
        }
    )
    assert OwnerCache(api.get).workload(RS) == (RS, None)


@pytest.mark.parametrize("status", [403, 404])
def test_a_replicaset_that_is_gone_or_may_not_be_read_is_the_workload_for_a_while(status: int) -> None:
    api, clock = _api(), Clock()
    api.failures = [ApiException(status=status, reason="no")]
    cache = OwnerCache(api.get, fallback_ttl=30, clock=clock)
    assert cache.workload(RS) == (RS, None)
    assert cache.refused == {"ReplicaSet": f"HTTP {status}"}
    cache.workload(RS)
    assert cache.gets == 1
    clock.now += 31
    assert cache.workload(RS) == (DEPLOYMENT, RS)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiException(status=500, reason="boom"), id="500"),
        pytest.param(ApiException(status=429, reason="slow down"), id="429"),
        pytest.param(ReadTimeoutError(None, "/apis", "read timed out"), id="timeout"),
    ],
)
def test_an_api_that_cannot_answer_now_is_retried_not_cached(error: Exception) -> None:
    api = _api()
    api.failures = [error]
    cache = OwnerCache(api.get)
    with pytest.raises(OwnerUnavailable):
        cache.workload(RS)
    assert cache.workload(RS) == (DEPLOYMENT, RS)
