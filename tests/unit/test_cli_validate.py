"""The CLI's `podgraft policy validate`: files and directories, every problem on its own line naming
file, document, policy and field; exit 1 when anything is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from tests.conftest import EXAMPLE_POLICIES
from tests.unit.builders import policy_yaml

pytestmark = pytest.mark.usefixtures("clean_env")

POLICIES = str(EXAMPLE_POLICIES)


# --- policy validate ------------------------------------------------------------------------------


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", POLICIES]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    listed = [line.split()[1] for line in out.splitlines()]
    assert listed == ["content-sync", "debug-rules", "log-shipper", "mesh-proxy", "wait-for-db"]
    assert all(line.startswith("ok  ") and "hash " in line for line in out.splitlines())


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
    assert main(["policy", "validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert line.startswith(f"{tmp_path / 'team' / 'bad.yaml'}: ")
    assert "document 2" in line
    assert "policy 'broken'" in line
    assert "spec.sidecars[0].imagee: unknown field; did you mean 'image'?" in line
    assert "Field required" not in line, "the misspelt field is named once, as a near miss"
    assert [row.split()[1] for row in out.splitlines()] == ["fine"]


def test_validate_several_directories(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: &x 1\nb: *x\n")
    assert main(["policy", "validate", POLICIES, str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "aliases" in err
    assert "ok  log-shipper" in out


def test_validate_missing_path_is_named_and_the_others_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["policy", "validate", str(tmp_path / "nope.yaml"), POLICIES]) == 1
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'nope.yaml'}: no such file or directory" in err
    assert "directory" not in err.replace("no such file or directory", "")
    assert "ok  log-shipper" in out


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
    assert main(["policy", "validate", str(policy)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["document 2", "document 3", "document 4"]
    assert all(line.startswith(f"{policy}: ") for line in lines)
    assert "already defined by document 1" in lines[2]
