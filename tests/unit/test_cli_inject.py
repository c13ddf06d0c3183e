"""The CLI's `podgraft inject`: workloads and pod templates of every kind, stdin, the sidecar mode for
an old cluster, `--explain`, the namespace opt-in check, denials and errors (exit 1), YAML without
aliases, other documents passed through; and usage errors (exit 2)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from tests.conftest import EXAMPLE_POLICIES, ROOT, assert_valid_pod

pytestmark = pytest.mark.usefixtures("clean_env")

PODS = ROOT / "examples" / "pods"
POLICIES = str(EXAMPLE_POLICIES)


def inject(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any], str]:
    code = main(["inject", "--policies", POLICIES, *args])
    out, err = capsys.readouterr()
    return code, list(yaml.safe_load_all(out)), err


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


# --- inject ---------------------------------------------------------------------------------------


def test_inject_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    source = list(yaml.safe_load_all((PODS / "deployment.yaml").read_text()))
    code, documents, err = inject(capsys, "-f", str(PODS / "deployment.yaml"))
    assert code == 0, err
    deployment, cronjob, configmap = documents
    assert [d["kind"] for d in documents] == ["Deployment", "CronJob", "ConfigMap"]

    template = deployment["spec"]["template"]
    assert names(template["spec"]["initContainers"]) == ["content-sync-init"]
    assert names(template["spec"]["containers"]) == ["nginx", "content-sync"]
    assert names(template["spec"]["volumes"]) == ["content"]
    assert "generateName" not in template["metadata"], "a pod template gets no generateName"
    assert "podgraft.io/status" in template["metadata"]["annotations"]
    # Everything outside the template is the manifest as written.
    assert {k: v for k, v in deployment["spec"].items() if k != "template"} == {
        k: v for k, v in source[0]["spec"].items() if k != "template"
    }
    assert deployment["metadata"] == source[0]["metadata"]

    job_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    assert names(job_pod["spec"]["initContainers"]) == ["wait-for-db"]
    assert job_pod["spec"]["restartPolicy"] == "OnFailure"
    assert "generateName" not in job_pod["metadata"]
    assert cronjob["spec"]["schedule"] == source[1]["spec"]["schedule"]

    assert configmap == source[2], "other kinds pass through unchanged"


def test_injected_templates_validate_as_pods(capsys: pytest.CaptureFixture[str]) -> None:
    _, documents, _ = inject(capsys, "-f", str(PODS / "deployment.yaml"))
    template = documents[0]["spec"]["template"]
    assert_valid_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": template["spec"]})


def test_inject_a_second_time_changes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, first, _ = inject(capsys, "-f", str(PODS / "deployment.yaml"))
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump_all(first, sort_keys=False))
    code, second, _ = inject(capsys, "-f", str(again))
    assert code == 0
    assert second == first


def test_inject_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((PODS / "web.yaml").read_text()))
    code, [pod], err = inject(capsys, "-f", "-")
    assert code == 0, err
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "web"
    # wait-for-db and mesh-proxy are requested (in that order), log-shipper matches its annotation;
    # native sidecars come first, in policy order, then init containers.
    assert names(pod["spec"]["initContainers"]) == ["mesh-proxy", "log-shipper", "wait-for-db"]
    assert all(c["restartPolicy"] == "Always" for c in pod["spec"]["initContainers"][:2])
    assert_valid_pod(pod)


def test_inject_classic_sidecars_for_an_old_cluster(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((PODS / "web.yaml").read_text()))
    code, [pod], _ = inject(capsys, "-f", "-", "--kubernetes-version", "1.28")
    assert code == 0
    # log-shipper is `auto` (classic on 1.28); mesh-proxy insists on native.
    assert names(pod["spec"]["containers"]) == ["app", "log-shipper"]
    assert names(pod["spec"]["initContainers"]) == ["mesh-proxy", "wait-for-db"]


def test_explain_names_applied_and_not_applied_policies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((PODS / "web.yaml").read_text()))
    code, _, err = inject(capsys, "-f", "-", "--explain")
    assert code == 0
    assert err.splitlines() == [
        "Pod/web (namespace shop):",
        "  (the namespace opt-in was not checked: no --namespace-label given)",
        "  + wait-for-db: requested by podgraft.io/inject; injected: wait-for-db (init container, first)",
        "  + mesh-proxy: requested by podgraft.io/inject; injected: mesh-proxy (native sidecar; "
        "sidecarMode native)",
        "  + log-shipper: selected by its match rules; injected: log-shipper (native sidecar; "
        "sidecarMode auto: "
        "the cluster has native sidecars)",
        "  - content-sync: not requested and its match rules do not fit",
        "  - debug-rules: not requested and its match rules do not fit",
    ]


def test_explain_says_why_a_sidecar_is_classic_and_why_a_job_gets_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "report", "namespace": "shop"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"podgraft.io/inject": "log-shipper"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "report", "image": "python:3.12"}],
                },
            }
        },
    }
    web = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"podgraft.io/inject": "log-shipper"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump_all([job, web]))
    code, [same_job, injected], err = inject(
        capsys,
        "-f",
        str(manifest),
        "--kubernetes-version",
        "1.28",
        "--namespace-label",
        "podgraft.io/injection=enabled",
        "--explain",
    )
    assert code == 0
    assert same_job == job
    assert names(injected["spec"]["containers"]) == ["app", "log-shipper"]
    assert [line for line in err.splitlines() if "log-shipper" in line or not line.startswith(" ")] == [
        "Job/report (namespace shop):",
        "  - log-shipper: requested by podgraft.io/inject; not injected: sidecar 'log-shipper' "
        "would be a classic "
        "container, which keeps this pod (restartPolicy Never) from completing; sidecarMode auto: no native "
        "sidecars before Kubernetes 1.29",
        "  ! podgraft: policy 'log-shipper' not injected: sidecar 'log-shipper' would be a "
        "classic container, which "
        "keeps this pod (restartPolicy Never) from completing; sidecarMode auto: no native sidecars before "
        "Kubernetes 1.29",
        "Pod/web (namespace default):",
        "  + log-shipper: requested by podgraft.io/inject; injected: log-shipper (classic "
        "sidecar; sidecarMode auto: "
        "no native sidecars before Kubernetes 1.29)",
    ]


def test_inject_help_documents_the_sidecar_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["inject", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--sidecar-mode {native,classic,auto}" in out
    assert "auto (default: native when --kubernetes-version is 1.29 or later, else classic)" in out
    assert "restartPolicy Never or OnFailure" in out


def test_explain_says_why_a_pod_is_skipped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "sys",
                    "namespace": "kube-system",
                    "annotations": {"podgraft.io/inject": "x"},
                },
                "spec": {"containers": [{"name": "a", "image": "b"}]},
            }
        )
    )
    code, [pod], err = inject(capsys, "-f", str(manifest), "--explain")
    assert code == 0
    assert "initContainers" not in pod["spec"]
    assert "  skipped: namespace 'kube-system' is never injected" in err.splitlines()


def test_namespace_labels_enable_the_opt_in_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, [pod], err = inject(
        capsys, "-f", str(PODS / "web.yaml"), "--namespace-label", "team=shop", "--explain"
    )
    assert code == 0
    assert "initContainers" not in pod["spec"]
    assert "not opted in" in err
    code, [pod], _ = inject(
        capsys, "-f", str(PODS / "web.yaml"), "--namespace-label", "podgraft.io/injection=enabled"
    )
    assert "initContainers" in pod["spec"]


def test_a_denial_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "clash.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "clash", "annotations": {"podgraft.io/inject": "mesh-proxy"}},
                "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 15000}]}]},
            }
        )
    )
    code, [pod], err = inject(capsys, "-f", str(manifest))
    assert code == 1
    assert pod["spec"] == {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 15000}]}]}
    [denial] = [line for line in err.splitlines() if line.startswith("denied: ")]
    assert "Pod/clash (namespace default)" in denial
    assert "required policy 'mesh-proxy'" in denial
    assert "15000" in denial


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["-f", "/nonexistent/manifest.yaml"], "error: ", id="missing-file"),
        pytest.param(["-f", "{bad"], "error: ", id="missing-file-odd-name"),
        pytest.param(["--namespace-label", "novalue"], "expects KEY=VALUE", id="bad-namespace-label"),
    ],
)
def test_inject_errors_exit_1(capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    full = args if "-f" in args else ["-f", str(PODS / "web.yaml"), *args]
    code = main(["inject", "--policies", POLICIES, *full])
    _, err = capsys.readouterr()
    assert code == 1
    assert words in err


def test_inject_with_unparsable_yaml_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text("kind: [\n")
    assert main(["inject", "--policies", POLICIES, "-f", str(manifest)]) == 1
    assert "error: " in capsys.readouterr().err


def test_output_has_no_yaml_aliases(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same injected mount and env go into every app container; the output must not alias them."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "two", "annotations": {"podgraft.io/inject": "log-shipper"}},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(manifest)))
    assert main(["inject", "--policies", POLICIES, "-f", "-"]) == 0
    out = capsys.readouterr().out
    assert "&id" not in out
    assert "*id" not in out
    pod = yaml.safe_load(out)
    assert pod["spec"]["containers"][0]["volumeMounts"] == pod["spec"]["containers"][1]["volumeMounts"]


def _template() -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"podgraft.io/inject": "wait-for-db"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }


@pytest.mark.parametrize(
    ("manifest", "path"),
    [
        pytest.param(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": "w"},
                "spec": {"template": _template()},
            },
            ("spec", "template"),
            id=kind,
        )
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job")
    ]
    + [
        pytest.param(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "w"},
                "spec": {"jobTemplate": {"spec": {"template": _template()}}},
            },
            ("spec", "jobTemplate", "spec", "template"),
            id="CronJob",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Pod", **_template()},
            (),
            id="Pod",
        ),
    ],
)
def test_every_workload_kind_is_injected(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    manifest: dict[str, Any],
    path: tuple[str, ...],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(manifest)))
    code, [document], err = inject(capsys, "-f", "-")
    assert code == 0, err
    node = document
    for key in path:
        node = node[key]
    assert names(node["spec"]["initContainers"]) == ["wait-for-db"]
    assert "generateName" not in node["metadata"]


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(
            {"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "p"}, "spec": _template()["spec"]},
            id="pod-v2",
        ),
        pytest.param(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}, id="no-template"
        ),
        pytest.param({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}, id="secret"),
        pytest.param(["a", "list"], id="list-document"),
        pytest.param("text", id="scalar-document"),
    ],
)
def test_other_documents_pass_through(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, manifest: Any
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(manifest)))
    code, [document], err = inject(capsys, "-f", "-")
    assert code == 0, err
    assert document == manifest


# --- usage ----------------------------------------------------------------------------------------


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["inject"], ["policy"], ["frobnicate"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
    capsys.readouterr()


# --- what users really feed it: aliases, Lists, deep nesting, broken files ------------------------------

LIST = ROOT / "tests" / "unit" / "apiserver_stored" / "audit" / "list.yaml"  # kubectl get ... -o yaml
ANCHORED = """\
apiVersion: v1
kind: Pod
metadata:
  name: two
  annotations: {podgraft.io/inject: log-shipper}
spec:
  containers:
  - name: a
    image: x
    env: &env
    - {name: MODE, value: prod}
    volumeMounts: &mounts
    - {name: data, mountPath: /data}
  - name: b
    image: y
    env: *env
    volumeMounts: *mounts
  volumes: [{name: data, emptyDir: {}}]
"""


def test_containers_sharing_a_yaml_anchor_get_the_policy_once_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "anchored.yaml"
    manifest.write_text(ANCHORED)
    code, [injected], err = inject(capsys, "-f", str(manifest))
    assert code == 0, err
    for container in injected["spec"]["containers"]:
        assert [e["name"] for e in container["env"]] == ["MODE", "LOG_DIR"], container["name"]
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/data", "/var/log/app"]
    assert_valid_pod(injected)
    capsys.readouterr()
    main(["inject", "--policies", POLICIES, "-f", str(manifest)])
    out = capsys.readouterr().out
    assert "&" not in out, "no anchors in the output"
    assert "*env" not in out
    assert "*mounts" not in out


def test_a_list_is_injected_item_by_item_and_stays_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    source = yaml.safe_load(LIST.read_text())
    code, [document], err = inject(capsys, "-f", str(LIST), "--explain")
    assert code == 0, err
    assert [i["kind"] for i in document["items"]] == ["Deployment", "Deployment", "Service", "ConfigMap"]
    assert {k: v for k, v in document.items() if k != "items"} == {
        k: v for k, v in source.items() if k != "items"
    }
    api, web, service, configmap = document["items"]
    assert names(api["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper", "wait-for-db"]
    assert names(web["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper"]
    assert (service, configmap) == tuple(source["items"][2:])
    assert "Deployment/api (namespace shop):" in err.splitlines()
    assert (
        "Service/web: passed through untouched (not a Pod or a workload with a pod template)"
        in err.splitlines()
    )
    assert (
        "ConfigMap/kube-root-ca.crt: passed through untouched (not a Pod or a workload with a pod template)"
        in err.splitlines()
    )


def test_explain_names_every_document_passed_through(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = [
        {"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "p"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        ["a", "list"],
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all(documents)))
    code, _, err = inject(capsys, "-f", "-", "--explain")
    assert code == 0
    assert err.splitlines() == [
        "Pod/p: passed through untouched (apiVersion 'v2' is not a Pod's (v1))",
        "Deployment/d: passed through untouched (no pod template at spec.template)",
        "document 3: passed through untouched (a list, not an object)",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("kind: Pod\nspec: {x: " + "[" * 900 + "]" * 900 + "}\n", "nested too deeply", id="deep"),
        pytest.param(
            "kind: Pod\nx: " + "[" * 1200 + "]" * 1200,
            "line 2, column 1003: while increasing flow level, exceeded maximum nesting depth",
            id="deeper",
        ),
        pytest.param(
            b"kind: Pod\nmetadata: {name: caf\xe9}\n", "not UTF-8 text: byte 0xe9 on line 2", id="latin-1"
        ),
        pytest.param(
            '{"kind": "Pod", "metadata": {"name": "p"',
            "not valid JSON: line 1, column 41: ",
            id="truncated-json",
        ),
        pytest.param("kind: Pod\nmetadata: {name: [}\n", "not valid YAML: line 2, column 19: ", id="yaml"),
    ],
)
def test_a_file_that_cannot_be_injected_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | bytes, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = main(["inject", "--policies", POLICIES, "-f", str(bad)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith(f"error: {bad}: ")
    assert message in line
