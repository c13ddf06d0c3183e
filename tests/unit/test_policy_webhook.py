"""`/validate-policies`: the validating webhook on policy ConfigMaps, fed the reviews a real
kube-apiserver sent (tests/unit/apiserver_stored/policy-reviews.yaml), through the app's own route.

Its refusal must hold exactly the lines `podgraft policy validate` prints for the same ConfigMap."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from app.admission import policies as webhook
from app.admission.policies import PolicyCheck, live_set_warnings, validate_policy_configmap
from app.admission.review import BadReview, parse_review
from app.cli import main
from app.metrics import Metrics
from app.server import MAX_VALIDATIONS, asgi_entry, create_app
from app.settings import Settings
from app.sources.documents import UNSCOPED_REQUIRED, image_pin_problem
from app.sources.store import PolicyStore
from tests.conftest import make_review
from tests.unit.builders import compiled, policy_set, policy_yaml

STORED = Path(__file__).parent / "apiserver_stored" / "policy-reviews.yaml"
REVIEWS: dict[str, dict[str, Any]] = yaml.safe_load(STORED.read_text())
SETTINGS = Settings(
    policy_source="configmaps", pod_namespace="podgraft", policy_namespaces=["podgraft", "teams"]
)
CHECK = PolicyCheck.from_settings(SETTINGS)
GOOD = policy_yaml("log-shipper", sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.1.9"}])


def review(what: str, **data: str) -> dict[str, Any]:
    """The stored review of `what` (create, update, label-removed, generate-name, dry-run), with its
    new object's data replaced by `data` when given."""
    request = copy.deepcopy(REVIEWS[what])
    if data:
        request["object"]["data"] = data
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decide(sent: dict[str, Any], *, live: Any = None, check: PolicyCheck = CHECK) -> webhook.Validation:
    return validate_policy_configmap(
        parse_review(json.dumps(sent).encode()), live=live or policy_set(), check=check
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    store = PolicyStore()
    store.replace_all({"configmap podgraft/base key base.yaml": policy_yaml("base")})
    app = create_app(SETTINGS, store=store, metrics=Metrics())
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, sent: Any) -> tuple[int, dict[str, Any]]:
    reply = client.post("/validate-policies", json=sent)
    return reply.status_code, reply.json()


def counted(client: TestClient) -> dict[str, float]:
    text = generate_latest(client.app.state.runtime.metrics.registry).decode()  # type: ignore[attr-defined]
    found = {}
    for line in text.splitlines():
        if line.startswith("podgraft_policy_validations_total{"):
            labels, value = line.split("} ")
            found[labels.split('"')[1]] = float(value)
    return found


# --- refused: every problem, as policy validate says it ---------------------------------------------


def test_a_broken_policy_is_refused_with_exactly_the_lines_of_policy_validate(
    client: TestClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sent = review("create")
    sent["request"]["object"]["data"]["second.yaml"] = policy_yaml(
        "second",
        sidecars=[{"name": "s", "image": "busybox:1.36", "resources": {"limits": {"memory": "64MB"}}}],
    )
    status, body = post(client, sent)

    assert status == 200
    response = body["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    header, *lines = response["status"]["message"].splitlines()
    assert header == "podgraft: 2 errors in policy ConfigMap podgraft/log-shipper, which would not load:"

    manifest = tmp_path / "cm.yaml"  # what CI would check before `kubectl apply`: the same object
    manifest.write_text(yaml.safe_dump(sent["request"]["object"]))
    assert main(["policy", "validate", str(manifest)]) == 1
    said = [line.removeprefix(f"{manifest}: ") for line in capsys.readouterr().err.splitlines()]
    assert lines == said
    assert lines == [
        "configmap podgraft/log-shipper key log.yaml: document 1: policy 'log-shipper': "
        "spec.sidecars[0].imag: unknown field; did you mean 'image'?",
        "configmap podgraft/log-shipper key second.yaml: document 1: policy 'second': "
        "spec.sidecars[0].resources.limits.memory: '64MB' is not a quantity "
        "(like 512Mi, 1Gi, 250m, 0.5, 1e3)",
    ]
    assert response["status"]["details"] == {
        "name": "log-shipper",
        "kind": "ConfigMap",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "field": "data[log.yaml]",
                "message": "document 1: policy 'log-shipper': spec.sidecars[0].imag: unknown field; "
                "did you mean 'image'?",
            },
            {
                "reason": "FieldValueInvalid",
                "field": "data[second.yaml]",
                "message": "document 1: policy 'second': spec.sidecars[0].resources.limits.memory: "
                "'64MB' is not a quantity (like 512Mi, 1Gi, 250m, 0.5, 1e3)",
            },
        ],
    }
    assert "warnings" not in response
    assert counted(client) == {"denied": 1.0}


def test_a_policy_name_two_keys_define_is_refused_as_policy_validate_refuses_it() -> None:
    verdict = decide(review("create", **{"a.yaml": GOOD, "b.yaml": GOOD}))
    assert verdict.outcome == "denied"
    assert verdict.response["status"]["message"].splitlines()[1:] == [
        "configmap podgraft/log-shipper key b.yaml: policy 'log-shipper' is already defined by "
        "configmap podgraft/log-shipper key a.yaml"
    ]


def test_a_refusal_lists_at_most_fifty_lines_and_says_how_many_more() -> None:
    broken = "\n---\n".join(policy_yaml(f"p{i}", sidecars=[{"name": "s", "imag": "x"}]) for i in range(60))
    verdict = decide(review("create", **{"many.yaml": broken}))
    lines = verdict.response["status"]["message"].splitlines()
    assert verdict.errors == 60  # each: the unknown field (its "did you mean" stands for the missing image)
    assert len(lines) == 1 + 50 + 1
    assert lines[-1] == "... 10 more (podgraft policy validate lists them all)"
    assert len(verdict.response["status"]["details"]["causes"]) == 50


def test_a_server_side_dry_run_is_checked_as_the_write_would_be() -> None:
    verdict = decide(review("dry-run"))
    assert verdict.outcome == "denied"
    assert "spec.sidecars[0].imag: unknown field" in verdict.response["status"]["message"]


def test_a_generated_name_is_the_name_the_apiserver_gave() -> None:
    verdict = decide(review("generate-name"))
    assert verdict.configmap == "podgraft/generated-222dh"
    assert "configmap podgraft/generated-222dh key log.yaml: " in verdict.response["status"]["message"]


# --- allowed ----------------------------------------------------------------------------------------


def test_a_valid_policy_passes_without_warnings(client: TestClient) -> None:
    sent = review("update", **{"log.yaml": GOOD})
    status, body = post(client, sent)
    assert status == 200
    assert body["response"] == {"uid": sent["request"]["uid"], "allowed": True}
    assert counted(client) == {"allowed": 1.0}


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        pytest.param(
            {"required": True, "env": [{"name": "A", "value": "1"}]},
            "spec.required",
            UNSCOPED_REQUIRED[False],
            id="required-requested",
        ),
        pytest.param(
            {"required": True, "match": {"labels": {"app": "web"}}, "env": [{"name": "A", "value": "1"}]},
            "spec.required",
            UNSCOPED_REQUIRED[True],
            id="required-matching",
        ),
        pytest.param(
            {"sidecars": [{"name": "s", "image": "busybox"}]},
            "spec.sidecars[0].image",
            "image 'busybox' has no tag or digest, so it is :latest: each node runs whatever it is when "
            "the node pulls it; pin a tag or a digest",
            id="no-tag",
        ),
        pytest.param(
            {"initContainers": [{"name": "i", "image": "registry:5000/team/init:latest"}]},
            "spec.initContainers[0].image",
            "image 'registry:5000/team/init:latest' is :latest, which moves: each node runs whatever it "
            "is when the node pulls it; pin a tag or a digest",
            id="latest-behind-a-registry-port",
        ),
        pytest.param(
            {
                "parameters": {"image": "busybox"},
                "containers": [{"name": "c", "image": "{{ params.image }}"}],
            },
            "spec.containers[0].image",
            "image 'busybox' has no tag or digest, so it is :latest: each node runs whatever it is when "
            "the node pulls it; pin a tag or a digest",
            id="from-a-parameter",
        ),
    ],
)
def test_legal_but_risky_is_a_warning_kubectl_prints_not_a_refusal(
    spec: dict[str, Any], field: str, message: str, client: TestClient
) -> None:
    status, body = post(client, review("create", **{"risky.yaml": policy_yaml("risky", **spec)}))
    assert status == 200
    assert body["response"]["allowed"] is True
    assert body["response"]["warnings"] == [
        f"podgraft: key risky.yaml: document 1: policy 'risky': {field}: {message}"
    ]
    assert all(len(w) <= 256 for w in body["response"]["warnings"])  # the apiserver cuts longer ones
    assert counted(client) == {"warned": 1.0}


@pytest.mark.parametrize(
    "image",
    [
        "busybox:1.36",
        "registry:5000/team/app:v2",
        "busybox@sha256:" + "0" * 64,
        "busybox:latest@sha256:" + "0" * 64,
        "{{ pod.annotations['example.com/image'] }}",  # the pod decides
        "busybox:{{ params.tag }}",
    ],
)
def test_a_pinned_image_or_one_the_pod_decides_is_not_warned_about(image: str) -> None:
    text = policy_yaml("p", parameters={"tag": "1.36"}, sidecars=[{"name": "s", "image": image}])
    verdict = decide(review("create", **{"p.yaml": text}))
    assert verdict.outcome == "allowed", verdict.response


def test_image_pins() -> None:
    assert image_pin_problem("localhost:5000/app") is not None  # the port is not a tag
    assert image_pin_problem("app:1") is None


def test_a_required_policy_with_a_namespace_selector_is_not_warned_about() -> None:
    text = policy_yaml(
        "p", required=True, namespaceSelector={"matchLabels": {"team": "a"}}, env=[{"name": "A"}]
    )
    assert decide(review("create", **{"p.yaml": text})).outcome == "allowed"


# --- the live set: warnings only ----------------------------------------------------------------------


def _live(*policies: tuple[str, str, dict[str, Any]]) -> Any:
    return policy_set([compiled(name, source=source, **spec) for name, source, spec in policies])


def test_a_name_another_live_configmap_defines_is_a_warning_that_says_which_wins() -> None:
    other = ("log-shipper", "configmap podgraft/aaa key log.yaml", {"env": [{"name": "A", "value": "1"}]})
    later = ("log-shipper", "configmap podgraft/zzz key log.yaml", {"env": [{"name": "A", "value": "1"}]})
    kept = decide(review("create", **{"log.yaml": GOOD}), live=_live(other))
    replaces = decide(review("create", **{"log.yaml": GOOD}), live=_live(later))

    assert kept.outcome == replaces.outcome == "warned"
    assert kept.response["warnings"] == [
        "podgraft: policy 'log-shipper' is already defined by configmap podgraft/aaa key log.yaml, which "
        "stays in force: this definition is ignored"
    ]
    assert replaces.response["warnings"] == [
        "podgraft: policy 'log-shipper' is already defined by configmap podgraft/zzz key log.yaml, and this "
        "definition replaces it (of two keys, the first in name order wins)"
    ]


def test_its_own_old_version_in_the_live_set_is_no_conflict() -> None:
    old = (
        "log-shipper",
        "configmap podgraft/log-shipper key log.yaml",
        {"sidecars": [{"name": "log-shipper", "image": "x:1"}]},
    )
    assert decide(review("update", **{"log.yaml": GOOD}), live=_live(old)).outcome == "allowed"


def test_a_container_or_volume_another_policy_injects_differently_is_a_warning() -> None:
    shared = {"name": "logs", "emptyDir": {}}
    live = _live(
        (
            "other",
            "configmap podgraft/other key o.yaml",
            {"sidecars": [{"name": "log-shipper", "image": "fluent/fluent-bit:3.2"}], "volumes": [shared]},
        ),
        (
            "twin",
            "configmap podgraft/twin key t.yaml",
            {"sidecars": [{"name": "log-shipper", "image": "fluent/fluent-bit:3.1.9"}]},
        ),
    )
    text = policy_yaml(
        "log-shipper",
        sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.1.9"}],
        volumes=[{"name": "logs", "emptyDir": {"medium": "Memory"}}],
    )
    verdict = decide(review("create", **{"log.yaml": text}), live=live)

    assert verdict.outcome == "warned"
    tail = "differently: a pod given both gets one, the other is skipped (refused, if required)"
    whose = "podgraft: policy 'log-shipper' and live policy 'other' (configmap podgraft/other key o.yaml)"
    # the identical sidecar of `twin` is no conflict: a pod given both holds it once
    assert verdict.response["warnings"] == [
        f"{whose} both inject container 'log-shipper', {tail}",
        f"{whose} both inject volume 'logs', {tail}",
    ]


def test_two_policies_of_one_configmap_that_clash_are_warned_about() -> None:
    one = policy_yaml("one", sidecars=[{"name": "helper", "image": "a:1"}])
    two = policy_yaml("two", containers=[{"name": "helper", "image": "a:1"}])  # same spec, another group
    warnings = decide(review("create", **{"one.yaml": one, "two.yaml": two})).response["warnings"]
    assert warnings == [
        "podgraft: policy 'two' and policy 'one' both inject container 'helper', differently: a pod given "
        "both gets one, the other is skipped (refused, if required)"
    ]


def test_the_live_set_checks_never_refuse() -> None:
    live = _live(
        (
            "log-shipper",
            "configmap podgraft/aaa key a.yaml",
            {"sidecars": [{"name": "log-shipper", "image": "b:2"}]},
        )
    )
    new = [compiled("log-shipper", source="configmap podgraft/log-shipper key log.yaml")]
    assert live_set_warnings(new, live=live, own_prefix="configmap podgraft/log-shipper key ")
    assert decide(review("create", **{"log.yaml": GOOD}), live=live).response["allowed"] is True


# --- never looked at -------------------------------------------------------------------------------


def test_removing_the_label_of_a_broken_configmap_is_allowed_unlooked_at(client: TestClient) -> None:
    sent = review("label-removed")
    assert "podgraft.io/policy" in sent["request"]["oldObject"]["metadata"]["labels"]
    assert "imag:" in sent["request"]["object"]["data"]["log.yaml"]  # still broken
    status, body = post(client, sent)
    assert (status, body["response"]) == (200, {"uid": sent["request"]["uid"], "allowed": True})
    assert counted(client) == {"ignored": 1.0}


@pytest.mark.parametrize("value", ["false", "True", ""])
def test_a_label_value_other_than_true_is_not_a_policy(value: str) -> None:
    sent = review("create")
    sent["request"]["object"]["metadata"]["labels"]["podgraft.io/policy"] = value
    assert decide(sent).outcome == "ignored"


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_a_delete_is_never_refused(operation: str, client: TestClient) -> None:
    sent = review("update")
    request = sent["request"]
    request["operation"] = operation
    request["oldObject"] = request.pop("object")
    status, body = post(client, sent)
    assert (status, body["response"]) == (200, {"uid": request["uid"], "allowed": True})


def test_a_labelled_configmap_in_a_namespace_not_watched_is_allowed_with_a_warning() -> None:
    sent = review("create")
    sent["request"]["namespace"] = "elsewhere"
    verdict = decide(sent)
    assert verdict.outcome == "warned"
    assert verdict.response["warnings"] == [
        "podgraft: namespace 'elsewhere' is not one Podgraft watches for policies (podgraft, teams): this "
        "ConfigMap is never loaded"
    ]


def test_local_mode_checks_a_configmap_of_any_namespace_and_not_against_its_directory() -> None:
    local = PolicyCheck.from_settings(Settings())
    sent = review("create")
    sent["request"]["namespace"] = "elsewhere"
    assert decide(sent, check=local).outcome == "denied"
    directory = _live(("log-shipper", "log-shipper.yaml", {"env": [{"name": "A", "value": "1"}]}))
    assert decide(review("create", **{"log.yaml": GOOD}), live=directory, check=local).outcome == "allowed"
    assert decide(review("create", **{"log.yaml": GOOD}), live=directory).outcome == "warned"


# --- broken reviews: 4xx, never a 500 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        pytest.param(
            lambda r: r["request"].update(resource={"group": "", "version": "v1", "resource": "pods"}),
            "got 'pods'",
            id="pods",
        ),
        pytest.param(
            lambda r: r["request"].update(
                resource={"group": "apps", "version": "v1", "resource": "deployments"}
            ),
            "got 'apps/deployments'",
            id="deployments",
        ),
        pytest.param(
            lambda r: r["request"].update(subResource="status"), "got 'configmaps/status'", id="subresource"
        ),
        pytest.param(
            lambda r: r["request"]["object"].update(kind="Secret"),
            "not a ConfigMap: kind 'Secret'",
            id="a-secret",
        ),
        pytest.param(
            lambda r: r["request"]["object"].update(metadata=["x"]),
            "not a ConfigMap: metadata a list",
            id="metadata-list",
        ),
        pytest.param(
            lambda r: r["request"].pop("object"), "request.object is required for CREATE", id="no-object"
        ),
        pytest.param(lambda r: r.update(kind="ConfigMap"), "unsupported kind 'ConfigMap'", id="not-a-review"),
    ],
)
def test_a_review_that_is_not_about_a_configmap_is_a_400(mutate: Any, words: str, client: TestClient) -> None:
    sent = review("create")
    mutate(sent)
    status, body = post(client, sent)
    assert status == 400
    assert words in body["response"]["status"]["message"]
    assert body["response"]["allowed"] is False
    assert counted(client) == {"bad_request": 1.0}


def test_data_that_is_not_a_mapping_is_refused_as_the_loader_would() -> None:
    sent = review("create")
    sent["request"]["object"]["data"] = ["log.yaml"]
    verdict = decide(sent)
    assert verdict.outcome == "denied"
    assert "configmap podgraft/log-shipper: data must be a mapping" in verdict.response["status"]["message"]


def test_a_malformed_body_is_a_4xx_with_a_message(client: TestClient) -> None:
    reply = client.post("/validate-policies", content=b"{", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["response"]["status"]["message"]
    reply = client.post("/validate-policies", content=b"{}", headers={"content-type": "text/plain"})
    assert reply.status_code == 400
    assert "Content-Type must be application/json" in reply.json()["response"]["status"]["message"]


def test_a_podgraft_bug_admits_the_configmap_with_a_warning(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr("app.server.validate_policy_configmap", broken)
    sent = review("create")
    status, body = post(client, sent)
    assert status == 200
    assert body["response"]["allowed"] is True
    assert body["response"]["warnings"] == [
        f"podgraft: internal error (uid {sent['request']['uid']}) while checking this policy ConfigMap; "
        "not checked"
    ]
    assert counted(client) == {"error": 1.0}


def test_bad_review_is_raised_not_answered_by_the_pure_check() -> None:
    sent = review("create")
    sent["request"]["resource"]["resource"] = "secrets"
    with pytest.raises(BadReview):
        decide(sent)


# --- a burst: one check at a time, a bounded wait, /mutate unaffected ---------------------------------


def test_a_burst_of_reviews_is_checked_one_at_a_time_bounded_and_mutate_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate, entered = threading.Event(), []

    def held(*args: Any, **kwargs: Any) -> webhook.Validation:
        entered.append(1)
        assert gate.wait(10)
        return validate_policy_configmap(*args, **kwargs)

    monkeypatch.setattr("app.server.validate_policy_configmap", held)
    app = asgi_entry(create_app(SETTINGS, store=PolicyStore(), metrics=Metrics()))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://podgraft") as client:
            waiting = [
                asyncio.create_task(client.post("/validate-policies", json=review("create")))
                for _ in range(MAX_VALIDATIONS)
            ]
            while not entered:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            over = await client.post("/validate-policies", json=review("create"))
            assert over.status_code == 503
            assert "checking other policy ConfigMaps; retry" in over.json()["response"]["status"]["message"]
            pod_review = make_review({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}})
            assert (await client.post("/mutate", json=pod_review)).status_code == 200
            assert len(entered) == 1  # the others wait their turn
            gate.set()
            replies = await asyncio.gather(*waiting)
            assert [r.status_code for r in replies] == [200] * MAX_VALIDATIONS
            assert {r.json()["response"]["allowed"] for r in replies} == {False}
            assert len(entered) == MAX_VALIDATIONS

    asyncio.run(scenario())
