"""`podgraft audit -f` on what a real kube-apiserver returned (tests/unit/apiserver_stored/audit: a
`kubectl get namespaces,replicasets,jobs,pods -A -o yaml` of pods made by controllers through the
webhook, and that apiserver's answers to label selectors): `-n` and `-l` as against the cluster,
empty listings, `--policy`, broken policies, dumps without Namespaces or ReplicaSets, manifests
without a namespace, duplicates, unreadable statuses, and files that do not parse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main

pytestmark = pytest.mark.usefixtures("clean_env")

STORED = Path(__file__).parent / "apiserver_stored" / "audit"
DUMP = STORED / "dump.yaml"
POLICIES = STORED / "policies"
SELECTORS: dict[str, Any] = json.loads((STORED / "selectors.json").read_text())
OBJECTS: list[dict[str, Any]] = yaml.safe_load(DUMP.read_text())["items"]
NO_KUBECONFIG = ["--kubeconfig", "/nonexistent/kubeconfig"]  # kubectl's default namespace: `default`


def audit(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    argv = ["audit", "--policies", str(POLICIES), "--kubernetes-version", "1.35", *NO_KUBECONFIG]
    code = main([*argv, *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def report(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, Any], str]:
    code, out, err = audit(capsys, *args, "-o", "json")
    return code, json.loads(out), err


def states(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(p["pod"], s["policy"]): s["state"] for p in data["pods"] for s in p["policies"]}


def pod_names(data: dict[str, Any]) -> list[str]:
    return sorted(f"{p['namespace']}/{p['pod']}" for p in data["pods"])


def write_list(path: Path, objects: list[dict[str, Any]]) -> Path:
    """What kubectl prints for these objects (a List), as YAML."""
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "items": objects, "kind": "List"}))
    return path


def without(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: obj["kind"] != kind


def the(prefix: str) -> str:
    """The full name of the (first) dump's pod whose name starts with `prefix` (from generateName)."""
    names = [o["metadata"]["name"] for o in OBJECTS if o["kind"] == "Pod"]
    return str(sorted(name for name in names if name.startswith(prefix))[0])


# --- the dump as it is --------------------------------------------------------------------------------


def test_the_dump_of_controller_made_pods_audits_as_captured(capsys: pytest.CaptureFixture[str]) -> None:
    code, data, err = report(capsys, "-f", DUMP)
    assert code == 1, "web's pods are stale, worker's missing"
    assert err == ""
    web, api = the("web-"), the("api-")
    assert states(data)[(web, "log-shipper")] == "stale"
    assert states(data)[(api, "log-shipper")] == "current"
    assert states(data)[(the("worker-"), "wait-for-db")] == "missing"
    assert states(data)[(the("app-"), "log-shipper")] == "refused"
    assert states(data)[(the("svc-"), "team-a-only")] == "refused"
    assert states(data)[(the("report-"), "wait-for-db")] == "current"
    owners = {p["pod"]: p["owner"] for p in data["pods"]}
    assert owners[web] == "Deployment/web"
    assert owners[the("report-")] == "Job/report"


@pytest.mark.parametrize("selector", [s for s, answer in SELECTORS.items() if isinstance(answer, list)])
def test_a_label_selector_picks_the_pods_the_apiserver_picked(
    capsys: pytest.CaptureFixture[str], selector: str
) -> None:
    """`-l` with `-f` against the apiserver's own answer to `kubectl get pods -A -l SELECTOR`; the
    audit keeps only the pods a policy concerns, so the apiserver's list is cut to those."""
    _, everything, _ = report(capsys, "-f", DUMP)
    concerned = set(pod_names(everything))
    _, data, _ = report(capsys, "-f", DUMP, "-l", selector)
    assert pod_names(data) == sorted(set(SELECTORS[selector]) & concerned)


@pytest.mark.parametrize("selector", [s for s, answer in SELECTORS.items() if isinstance(answer, dict)])
def test_a_selector_the_apiserver_refuses_is_refused(
    capsys: pytest.CaptureFixture[str], selector: str
) -> None:
    code, out, err = audit(capsys, "-f", DUMP, f"--selector={selector}")
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: -l {selector!r}: ")
    assert len(err.splitlines()) == 1


def test_a_namespace_and_a_selector_together(capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = report(capsys, "-f", DUMP, "-n", "shop", "-l", "app in (web,api),tier!=front")
    assert pod_names(data) == SELECTORS["app in (web,api),tier!=front"], "api's pods, both in shop"
    assert code == 0, "api's pods are current"
    _, data, _ = report(capsys, "-f", DUMP, "-n", "team-b")
    assert pod_names(data) == [f"team-b/{the('svc-')}"]
    _, data, _ = report(capsys, "-f", DUMP, "-n", "nowhere")
    assert data["pods"] == []


# --- nothing to audit -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.yaml", "empty.json"])
def test_a_listing_without_pods_is_an_empty_table_and_exit_0(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = audit(capsys, "-f", STORED / name)
    assert code == 0
    assert out.splitlines() == [
        "NAMESPACE  POD  OWNER  POLICY  STATE  DETAIL",
        "",
        "no pod asks for or matches a policy",
    ]
    assert err == f"warning: no pods in {STORED / name} (it holds no objects)\n"
    code, data, _ = report(capsys, "-f", STORED / name)
    assert (code, data) == (0, {"pods": [], "summary": {}, "needsRestart": False})
    assert (
        audit(capsys, "-f", STORED / name, "--restart-plan")[1]
        == "# nothing is stale or missing: nothing to restart\n"
    )


def test_an_empty_file_and_a_file_of_other_kinds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code, out, _ = audit(capsys, "-f", empty)
    assert code == 0
    assert out.splitlines()[-1] == "no pod asks for or matches a policy"
    code, _, err = audit(capsys, "-f", STORED / "list.yaml")
    assert code == 0
    assert "no pods in" in err
    assert "its objects: 1 ConfigMap, 2 Deployment, 1 Service" in err


def test_a_policy_that_does_not_exist_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = audit(capsys, "-f", DUMP, "--policy", "log-shiper")
    assert (code, out) == (2, "")
    assert err == (
        "error: --policy 'log-shiper': no such policy in force, and none recorded in a pod;"
        " did you mean 'log-shipper'?\n"
    )
    assert audit(capsys, "-f", DUMP, "--policy", "team-a-only")[0] == 0, "refused only"


def test_a_policy_recorded_in_pods_but_gone_can_be_asked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    only_wait = tmp_path / "policies"
    only_wait.mkdir()
    documents = list(yaml.safe_load_all((POLICIES / "policies.yaml").read_text()))
    (only_wait / "wait.yaml").write_text(yaml.safe_dump(documents[1]))
    code, data, _ = report(capsys, "-f", DUMP, "--policies", only_wait, "--policy", "log-shipper")
    assert code == 0
    found = states(data)
    assert found.pop((the("app-"), "log-shipper")) == "refused", "asked for, never injected: no such policy"
    assert set(found.values()) == {"orphaned"}
    assert len(found) == 4, "web's and api's pods"


# --- policies that do not load -----------------------------------------------------------------------------


def test_a_broken_policy_file_stops_the_audit_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "policies.yaml").write_text((POLICIES / "policies.yaml").read_text())
    (broken / "proxy.yaml").write_text(
        "apiVersion: podgraft.io/v1alpha1\nkind: InjectionPolicy\nmetadata: {name: proxy}\n"
        "spec:\n  sidecars: [{name: proxy}]\n"
    )
    code, out, err = audit(capsys, "-f", DUMP, "--policies", broken)
    assert (code, out) == (2, "")
    first, last = err.splitlines()
    assert first == (
        f"error: policy file {broken / 'proxy.yaml'}: document 1: policy 'proxy':"
        " spec.sidecars[0].image: Field required"
    )
    assert last.startswith("error: 1 policy source(s) do not load: ")


# --- what the dump does not say ----------------------------------------------------------------------


def test_without_namespaces_what_would_be_missing_is_unknown(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dump = write_list(tmp_path / "no-ns.yaml", [o for o in OBJECTS if o["kind"] != "Namespace"])
    code, data, err = report(capsys, "-f", dump)
    found = states(data)
    assert found[(the("worker-"), "wait-for-db")] == "unknown", "late may be opted in or not"
    assert found[(the("app-"), "log-shipper")] == "unknown", "legacy: the opt-in is not known"
    assert found[(the("svc-"), "team-a-only")] == "unknown", "team-b: its labels are not known"
    assert found[(the("web-"), "log-shipper")] == "stale", "the pod's own record says it was injected"
    assert found[(the("api-"), "log-shipper")] == "current"
    [worker] = [s for p in data["pods"] for s in p["policies"] if p["pod"] == the("worker-")]
    assert worker["detail"] == (
        "namespace 'late' not checked, its labels are unknown; if opted in: missing,"
        " never injected: container 'wait-for-db'"
    )
    assert data["summary"]["wait-for-db"] == {"current": 3, "unknown": 1}
    assert code == 1, "stale"
    [warning] = err.splitlines()
    assert warning == (
        f"warning: no Namespace in {dump} for late, legacy, shop, team-b: their opt-in and namespaceSelectors"
        " were not checked, so what would be missing there is `unknown`"
        " (dump them too: kubectl get namespaces,replicasets,jobs,pods -A -o yaml)"
    )
    code, out, _ = audit(capsys, "-f", dump, "-n", "late")
    assert code == 0, "unknown is not missing"
    assert "policy wait-for-db: 1 unknown (1 pod)" in out.splitlines()


def test_without_replicasets_the_plan_says_what_is_known(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dump = write_list(tmp_path / "pods.yaml", [o for o in OBJECTS if o["kind"] in ("Namespace", "Pod")])
    code, out, err = audit(capsys, "-f", dump, "--restart-plan")
    assert code == 1
    [web_rs] = {o["metadata"]["name"] for o in OBJECTS if o["metadata"]["name"].startswith("web-")} - {
        o["metadata"]["name"] for o in OBJECTS if o["kind"] == "Pod"
    }
    assert "kubectl rollout" not in out, "no workload is known to roll out"
    assert "Job's next run" not in out, "a ReplicaSet is no Job"
    find = f"kubectl get -n shop replicaset/{web_rs} -o jsonpath='{{.metadata.ownerReferences}}'"
    assert f"#   shop ReplicaSet/{web_rs}: log-shipper stale  ({find})" in out.splitlines()
    assert "ReplicaSets or Jobs not found in" in err
    _, data, _ = report(capsys, "-f", dump)
    [web] = [p for p in data["pods"] if p["pod"] == the("web-")]
    assert (web["owner"], web["ownerListed"]) == (f"ReplicaSet/{web_rs}", False)
    _, table, _ = audit(capsys, "-f", dump)
    assert f"ReplicaSet/{web_rs} (not listed)" in table


def _manifest_pod() -> dict[str, Any]:
    """A web pod as a manifest holds it: no namespace (and its ReplicaSet likewise)."""
    pod = next(o for o in OBJECTS if o["kind"] == "Pod" and o["metadata"]["name"].startswith("web-"))
    metadata = {k: v for k, v in pod["metadata"].items() if k != "namespace"}
    return {**pod, "metadata": metadata}


@pytest.mark.parametrize(
    ("kubeconfig_namespace", "flag", "expected"),
    [(None, [], "default"), ("shop", [], "shop"), (None, ["-n", "team-b"], "team-b")],
    ids=["default", "kubeconfig-context", "flag"],
)
def test_a_pod_without_a_namespace_is_in_one_namespace_everywhere(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kubeconfig_namespace: str | None,
    flag: list[str],
    expected: str,
) -> None:
    """Where `kubectl apply -f` would put it: -n, else the kubeconfig context's namespace, else
    `default`; the table, the JSON and the restart plan agree."""
    replica_set = next(
        o for o in OBJECTS if o["kind"] == "ReplicaSet" and o["metadata"]["name"].startswith("web-")
    )
    objects = [
        _manifest_pod(),
        {**replica_set, "metadata": {k: v for k, v in replica_set["metadata"].items() if k != "namespace"}},
    ]
    manifest = write_list(tmp_path / "manifest.yaml", objects)
    kubeconfig = tmp_path / "kubeconfig"
    context = {
        "cluster": "c",
        "user": "u",
        **({"namespace": kubeconfig_namespace} if kubeconfig_namespace else {}),
    }
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": context}],
                "current-context": "c",
            }
        )
    )
    args = ["-f", manifest, "--kubeconfig", kubeconfig, *flag]
    _, data, err = report(capsys, *args)
    assert [(p["namespace"], p["owner"]) for p in data["pods"]] == [(expected, "Deployment/web")]
    assert f"are taken to be in namespace {expected!r}" in err
    _, plan, _ = audit(capsys, *args, "--restart-plan")
    assert f"kubectl rollout restart -n {expected} deployment/web" in plan


def test_duplicate_pods_are_audited_once_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, once, _ = report(capsys, "-f", DUMP)
    twice = tmp_path / "twice.yaml"
    twice.write_text(DUMP.read_text() + "---\n" + DUMP.read_text())  # a dump concatenated to itself
    repeated = write_list(tmp_path / "repeated.yaml", [*OBJECTS, *(o for o in OBJECTS if o["kind"] == "Pod")])
    pods = sum(1 for o in OBJECTS if o["kind"] == "Pod")
    for dump in (twice, repeated):
        _, data, err = report(capsys, "-f", dump)
        assert data == once
        assert err == (
            f"warning: {dump}: {pods} duplicate pod(s) dropped (the same namespace and name more than once):"
            " each pod is audited once\n"
        )


def test_a_pod_with_an_unreadable_status_and_no_policy_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    scratch = the("scratch-")
    _, out, _ = audit(capsys, "-f", DUMP)
    [row] = [line for line in out.splitlines() if scratch in line]
    assert row.split()[:5] == ["shop", scratch, f"Pod/{scratch}", "-", "-"]
    assert row.endswith("the podgraft.io/status annotation is not JSON")
    assert "1 pod with a status annotation that cannot be read" in out.splitlines()
    _, data, _ = report(capsys, "-f", DUMP)
    [pod] = [p for p in data["pods"] if p["pod"] == scratch]
    assert pod == {
        "namespace": "shop",
        "pod": scratch,
        "owner": f"Pod/{scratch}",
        "note": "the podgraft.io/status annotation is not JSON",
        "policies": [],
    }
    _, data, _ = report(capsys, "-f", DUMP, "--policy", "log-shipper")
    assert scratch in [p["pod"] for p in data["pods"]], "it may have held any policy"


# --- the same objects in other shapes ---------------------------------------------------------------


def test_json_and_yaml_dumps_audit_the_same(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    as_json = tmp_path / "dump.json"
    as_json.write_text(json.dumps({"apiVersion": "v1", "items": OBJECTS, "kind": "List"}, indent=4))
    streams = tmp_path / "stream.yaml"
    streams.write_text(yaml.safe_dump_all(OBJECTS))  # manifests, one document each
    _, from_yaml, _ = report(capsys, "-f", DUMP)
    for other in (as_json, streams):
        assert report(capsys, "-f", other)[1] == from_yaml


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b'{"apiVersion": "v1", "items": [{"kind": "Pod", ',
            "not valid JSON: line 1, column 48: Expecting property name enclosed in double quotes",
            id="truncated-json",
        ),
        pytest.param(
            b"items:\n- kind: Pod\n  metadata: {name: caf\xe9}\n",
            "not UTF-8 text: byte 0xe9 on line 3",
            id="latin-1",
        ),
        pytest.param(
            b"items:\n- kind: Pod\n  metadata: {name: [}\n", "not valid YAML: line 3, column ", id="yaml"
        ),
        pytest.param(
            b'{"items": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
            "not valid JSON: nested too deeply",
            id="deep-json",
        ),
        pytest.param(
            b"kind: Pod\nspec: " + b"[" * 5000 + b"]" * 5000,
            "not valid YAML: line 2, column 1006: while increasing flow level, exceeded maximum nesting"
            " depth",
            id="deep-yaml",
        ),
    ],
)
def test_a_file_that_does_not_parse_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.file"
    bad.write_bytes(content)
    code, out, err = audit(capsys, "-f", bad)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {bad}: {message}")
    assert len(err.splitlines()) == 1


def test_a_missing_file_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = audit(capsys, "-f", "/nonexistent/dump.yaml")
    assert code == 2
    assert err == "error: /nonexistent/dump.yaml: cannot read: No such file or directory\n"
