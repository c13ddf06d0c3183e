"""The CLI's `podgraft policy validate`: files, directories and manifests (ConfigMaps, Lists, Helm
streams), every problem on its own line naming file (ConfigMap and key), document, policy and field;
exit 1 on any error, 0 with warnings unless --strict, 2 on a usage error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.sources.documents import UNSCOPED_REQUIRED
from tests.conftest import EXAMPLE_POLICIES
from tests.unit.builders import policy_doc, policy_yaml

pytestmark = pytest.mark.usefixtures("clean_env")

POLICIES = str(EXAMPLE_POLICIES)


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(["policy", "validate", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def configmap(name: str, data: dict[str, Any], *, labelled: bool = True, namespace: str = "podgraft") -> dict:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {"podgraft.io/policy": "true"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


# --- what was read ---------------------------------------------------------------------------------


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate(capsys, POLICIES)
    assert code == 0
    # the one warning: mesh-proxy is required and any opted-in namespace may ask for it
    assert len(err) == 1, err
    assert err[0].endswith(
        "/mesh-proxy.yaml: warning: document 1: policy 'mesh-proxy': spec.required: "
        + UNSCOPED_REQUIRED[False]
    )
    listed = [line.split()[1] for line in out[:-1]]
    assert listed == ["content-sync", "debug-rules", "log-shipper", "mesh-proxy", "wait-for-db"]
    assert all(line.startswith("ok  ") and "hash " in line for line in out[:-1])
    assert out[-1].startswith("5 files, 5 policies: ")
    assert out[-1].endswith("(checked against Kubernetes 1.29)")


def test_validate_names_file_policy_and_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(policy_yaml("fine"))
    nested = tmp_path / "team"
    nested.mkdir()
    (nested / "bad.yaml").write_text(
        policy_yaml("fine-too")
        + "---\n"
        + policy_yaml("broken", sidecars=[{"name": "s", "imagee": "busybox"}])
    )
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "README.md").write_text("not a policy")
    code, out, err = validate(capsys, str(tmp_path))
    assert code == 1
    assert err == [
        f"{tmp_path}: note: 1 file(s) skipped, not .yaml/.yml/.json: README.md",
        f"{tmp_path / 'team' / 'bad.yaml'}: document 2: policy 'broken': spec.sidecars[0].imagee: "
        "unknown field; did you mean 'image'?",
    ], "the misspelt field is named once, as a near miss (no 'Field required' for image)"
    assert [row.split()[1] for row in out[:-1]] == ["fine"]
    assert out[-1] == "2 files, 1 policy: 1 error, 0 warnings (checked against Kubernetes 1.29)"


def test_validate_several_directories(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: &x 1\nb: *x\n")
    code, out, err = validate(capsys, POLICIES, str(tmp_path))
    assert code == 1
    assert (
        f"{tmp_path / 'bad.yaml'}: not valid YAML: line 2, column 4: YAML aliases (*anchor) are not allowed"
        in (" ".join(err))
    )
    assert "ok  log-shipper" in " ".join(out)


def test_validate_missing_path_is_named_and_the_others_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = validate(capsys, str(tmp_path / "nope.yaml"), POLICIES)
    assert code == 1
    assert f"{tmp_path / 'nope.yaml'}: no such file or directory" in err
    assert "ok  log-shipper" in " ".join(out)


def test_validate_takes_a_file_and_reports_every_problem_on_its_own_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "---\n".join(
            [
                policy_yaml("one", env=[{"name": "A", "value": "1"}]),
                policy_yaml("two", env=[{"name": "A", "valu": "1"}]),
                "{}\n",
                policy_yaml("one", env=[{"name": "B", "value": "1"}]),
            ]
        )
    )
    code, _out, err = validate(capsys, str(policy))
    assert code == 1
    assert [line.split(": ")[1] for line in err] == ["document 2", "document 3", "document 4"]
    assert all(line.startswith(f"{policy}: ") for line in err)
    assert "already defined by document 1" in err[2]


def test_an_empty_directory_is_an_error_not_nothing_to_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("x")
    code, out, err = validate(capsys, str(tmp_path))
    assert code == 1
    assert err == [
        f"{tmp_path}: note: 1 file(s) skipped, not .yaml/.yml/.json: notes.txt",
        f"{tmp_path}: no policy files (.yaml, .yml, .json) in this directory",
    ]
    assert out == ["0 files, 0 policies: 1 error, 0 warnings (checked against Kubernetes 1.29)"]


def test_every_suffix_in_any_case_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.YAML").write_text(policy_yaml("upper"))
    (tmp_path / "b.yml").write_text(policy_yaml("short"))
    (tmp_path / "c.json").write_text(json.dumps(policy_doc("json")))
    (tmp_path / "d.Json").write_text(json.dumps(policy_doc("mixed", sidecars=[{"name": "s", "image": 1}])))
    code, out, err = validate(capsys, str(tmp_path))
    assert code == 1
    assert err == [
        f"{tmp_path / 'd.Json'}: document 1: policy 'mixed': spec.sidecars[0].image: "
        "Input should be a valid string"
    ]
    assert [row.split()[1] for row in out[:-1]] == ["json", "short", "upper"]
    assert out[-1].startswith("4 files, 3 policies: 1 error")


def test_a_name_defined_twice_across_arguments_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "a.yaml").write_text(policy_yaml("same"))
    (two / "b.yaml").write_text(policy_yaml("same", env=[{"name": "A", "value": "1"}]))
    (tmp_path / "c.yaml").write_text(policy_yaml("log-shipper"))
    code, out, err = validate(capsys, str(one), str(two), str(tmp_path / "c.yaml"), POLICIES)
    assert code == 1
    errors = [line for line in err if ": warning: " not in line]
    assert errors == [
        f"{two / 'b.yaml'}: policy 'same' is already defined by {one / 'a.yaml'}",
        f"{EXAMPLE_POLICIES / 'log-shipper.yaml'}: policy 'log-shipper' is already defined by "
        f"{tmp_path / 'c.yaml'}",
    ]
    assert [row.split()[1] for row in out[:-1]].count("same") == 1


# --- file errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b'{"apiVersion": "podgraft.io/v1alpha1", "kind": ',
            "not valid JSON: unexpected end of data: line 1 column 48 (char 47)",
            id="truncated-json",
        ),
        pytest.param(
            b"apiVersion: podgraft.io/v1alpha1\nkind: Injection\xffPolicy\n",
            "not UTF-8 text: byte 0xff at offset 48 (line 2); policies are UTF-8 YAML or JSON",
            id="not-utf-8",
        ),
        pytest.param(
            b"apiVersion: podgraft.io/v1alpha1\nkind: InjectionPolicy\nmetadata:\n  name: x\n   spec: {}\n",
            "not valid YAML: line 5, column 8: mapping values are not allowed here",
            id="yaml-syntax-with-line",
        ),
    ],
)
def test_file_errors_name_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    code, _out, err = validate(capsys, str(path))
    assert code == 1
    assert err == [f"{path}: {message}"]


# --- the Kubernetes schema of what a policy injects ------------------------------------------------


def test_what_the_apiserver_would_refuse_on_every_pod_is_refused_naming_file_document_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_yaml("fine")
        + "---\n"
        + policy_yaml(
            "broken",
            sidecars=[
                {
                    "name": "helper",
                    "image": "busybox:1.36",
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSecondz": 5},
                    "resources": {"limits": {"memory": "lots"}},
                }
            ],
            volumes=[{"name": "data", "hostPth": {"path": "/var/data"}}, {"name": "cache", "emptyDir": []}],
        )
    )
    code, out, err = validate(capsys, str(path))
    assert code == 1
    where = f"{path}: document 2: policy 'broken': "
    assert err == [
        where + "spec.sidecars[0].livenessProbe.periodSecondz: unknown field in Kubernetes 1.29; "
        "did you mean 'periodSeconds'?",
        where + "spec.sidecars[0].resources.limits.memory: 'lots' is not a quantity "
        "(like 512Mi, 1Gi, 250m, 0.5, 1e3)",
        where + "spec.volumes[0].hostPth: unknown field in Kubernetes 1.29; did you mean 'hostPath'?",
        where + "spec.volumes[1].emptyDir: expected a mapping, got a list",
    ]
    assert out == ["1 file, 0 policies: 4 errors, 0 warnings (checked against Kubernetes 1.29)"], (
        "a file is used whole or not at all, as the webhook loads it"
    )


def test_the_cluster_version_decides_which_fields_exist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_yaml(
            "stop",
            sidecars=[{"name": "s", "image": "b:1", "lifecycle": {"stopSignal": "SIGUSR1"}}],
        )
    )
    code, _out, err = validate(capsys, str(path))
    assert code == 1
    assert err == [
        f"{path}: document 1: policy 'stop': spec.sidecars[0].lifecycle.stopSignal: unknown field in "
        "Kubernetes 1.29 (added in 1.33)"
    ]
    assert validate(capsys, "--kubernetes-version", "v1.33.2", str(path))[0] == 0
    monkeypatch.setenv("PODGRAFT_KUBERNETES_VERSION", "1.34")
    code, out, _err = validate(capsys, str(path))
    assert code == 0
    assert out[-1] == "1 file, 1 policy: ok (checked against Kubernetes 1.34)"


def test_a_cluster_newer_than_every_shipped_schema_is_checked_against_the_newest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app.sources.kubeschema import shipped_versions

    newest = shipped_versions()[-1]
    (tmp_path / "p.yaml").write_text(policy_yaml("p"))
    code, out, err = validate(capsys, "--kubernetes-version", "1.99", str(tmp_path / "p.yaml"))
    assert code == 0
    assert err == [
        f"--kubernetes-version: note: no schema shipped for Kubernetes 1.99 (Podgraft ships 1.29 to "
        f"{newest}); checking against {newest}"
    ]
    assert out[-1].endswith(f"(checked against Kubernetes {newest})")


def test_a_bad_kubernetes_version_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate(capsys, "--kubernetes-version", "latest", POLICIES)
    assert code == 2
    assert out == []
    assert err == [
        "error: --kubernetes-version: expected a Kubernetes version like 1.30 or v1.30.2, got 'latest'"
    ]


def test_a_bad_kubernetes_version_in_the_environment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODGRAFT_KUBERNETES_VERSION", "newest")
    code, _out, err = validate(capsys, POLICIES)
    assert code == 2
    assert err == [
        "error: PODGRAFT_KUBERNETES_VERSION: expected a version like 1.30 or v1.30.2, got 'newest'"
    ]


# --- templates -------------------------------------------------------------------------------------


def test_every_template_problem_of_a_file_in_one_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_yaml(
            "tpl",
            sidecars=[
                {
                    "name": "s",
                    "image": "busybox:{{ '%s' % params.tag }}",
                    "args": ["{{ '{}'.format(pod.name) }}", "{{ pod.__class__ }}", "{{ 2 ** 64 ** 64 }}"],
                    "env": [{"name": "A", "value": "{{ pod.nonexistent }}"}],
                }
            ],
            parameters={"tag": "1"},
        )
    )
    code, _out, err = validate(capsys, str(path))
    assert code == 1
    fields = [line.split(": ")[3] for line in err]
    assert fields == [
        "spec.sidecars[0].image",
        "spec.sidecars[0].args[0]",
        "spec.sidecars[0].args[1]",
        "spec.sidecars[0].args[2]",
        "spec.sidecars[0].env[0].value",
    ]
    assert "'%' string formatting is not allowed" in err[0]
    assert "calling .format() is not allowed" in err[1]
    assert "attribute '__class__' is not allowed" in err[2]
    assert "power too large" in err[3]
    assert "pod.nonexistent is never defined" in err[4]


# --- pod.name in env -------------------------------------------------------------------------------


def test_an_env_value_rendering_pod_name_is_a_warning_and_strict_fails_on_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_yaml(
            "named",
            sidecars=[
                {
                    "name": "s",
                    "image": "b:1",
                    "env": [
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "ID", "value": "{{ pod.namespace }}/{{ pod.name }}"},
                    ],
                    "args": ["--name={{ pod.name }}"],
                }
            ],
            env=[
                {"name": "PREFIX", "value": "{{ pod.generateName }}"},
                {"name": "NAME", "value": "{{ pod['name'] | upper }}"},
            ],
            ephemeral={"env": [{"name": "SESSION", "value": "{{ pod.namespace }}/{{ pod.name }}"}]},
        )
    )
    code, out, err = validate(capsys, str(path))
    assert code == 0
    where = f"{path}: warning: document 1: policy 'named': "
    assert [line.split("value: ")[0] + "value" for line in err] == [
        where + "spec.env[1].value",
        where + "spec.sidecars[0].env[1].value",
    ], "not the generateName, not args, not kubectl debug's env (the pod has its name by then)"
    assert all("valueFrom: {fieldRef: {fieldPath: metadata.name}}" in line for line in err)
    assert out == [
        f"ok  named  ({path}, hash {out[0].split('hash ')[1][:-1]})",
        "1 file, 1 policy: 0 errors, 2 warnings (checked against Kubernetes 1.29)",
    ]
    code, out, err = validate(capsys, "--strict", str(path))
    assert code == 1
    assert len(err) == 2


# --- manifests -------------------------------------------------------------------------------------


def test_a_configmap_manifest_names_each_policy_by_configmap_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = (EXAMPLE_POLICIES / "wait-for-db.yaml").read_text()
    broken = policy_yaml("broken", volumes=[{"name": "v", "hostPth": {"path": "/x"}}])
    path = tmp_path / "cm.yaml"
    path.write_text(yaml.safe_dump(configmap("policies", {"wait-for-db.yaml": log, "broken.yaml": broken})))
    code, out, err = validate(capsys, str(path))
    assert code == 1
    assert err == [
        f"{path}: configmap podgraft/policies key broken.yaml: document 1: policy 'broken': "
        "spec.volumes[0].hostPth: unknown field in Kubernetes 1.29; did you mean 'hostPath'?"
    ]
    assert out[0].startswith(
        f"ok  wait-for-db  ({path}: configmap podgraft/policies key wait-for-db.yaml, hash "
    )
    assert (
        out[-1] == "1 file, 1 policy from 1 ConfigMap: 1 error, 0 warnings (checked against Kubernetes 1.29)"
    )


def test_a_list_of_configmaps_as_kubectl_prints_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            configmap("a", {"a.yaml": policy_yaml("alpha")}),
            configmap("b", {"b.yaml": policy_yaml("beta"), "c.yaml": policy_yaml("alpha")}, namespace="team"),
            configmap("kube-root-ca.crt", {"ca.crt": "-----BEGIN CERTIFICATE-----"}, labelled=False),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
        ],
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(listing))
    code, out, err = validate(capsys, str(path))
    assert code == 1
    assert err == [
        f"{path}: configmap podgraft/kube-root-ca.crt: note: not labelled podgraft.io/policy=true, so "
        "Podgraft does not read it; skipped",
        f"{path}: note: not policies, skipped: 1 Secret",
        f"{path}: configmap team/b key c.yaml: policy 'alpha' is already defined by "
        f"{path}: configmap podgraft/a key a.yaml",
    ]
    assert [row.split()[1] for row in out[:-1]] == ["alpha", "beta"]
    assert out[-1].startswith("1 file, 2 policies from 2 ConfigMaps: 1 error")


def test_a_configmap_with_non_text_values_or_no_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cms.yaml"
    empty = configmap("empty", {})
    binary = {**configmap("binary", {"ok.yaml": policy_yaml("ok")}), "binaryData": {"p.yaml": "YQ=="}}
    path.write_text(yaml.safe_dump_all([configmap("numbers", {"n.yaml": 3}), empty, binary]))
    code, _out, err = validate(capsys, str(path))
    assert code == 1
    assert err == [
        f"{path}: configmap podgraft/numbers key n.yaml: a data value must be a string (the apiserver "
        "refuses this ConfigMap)",
        f"{path}: configmap podgraft/empty: warning: holds no policy (no data keys)",
        f"{path}: configmap podgraft/binary: warning: binaryData is never read (policies are text): p.yaml",
    ]


def test_standard_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    stream = yaml.safe_dump_all(
        [configmap("p", {"p.yaml": policy_yaml("piped")}), {"apiVersion": "v1", "kind": "Service"}]
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stream.encode())))
    code, out, err = validate(capsys, "-")
    assert code == 0
    assert err == ["-: note: not policies, skipped: 1 Service"]
    assert out[0].startswith("ok  piped  (-: configmap podgraft/p key p.yaml, hash ")
