"""The audit's golden case: `tests/golden/audit/cluster.yaml` (namespaces, owners and pods that real
controllers made through the webhook, as a kube-apiserver stored them: `capture.py`, whose docstring
says what each workload shows) audited with `tests/golden/audit/policies`.

`expected-table.txt`, `expected.json` and `expected-plan.txt` are exactly what `podgraft audit -f`
prints with `-o table`, `-o json` and `--restart-plan`. Regenerate with
`pytest tests/golden --update-golden` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main

HERE = Path(__file__).parent / "audit"
COMMAND = ["audit", "-f", str(HERE / "cluster.yaml"), "--policies", str(HERE / "policies")]
OUTPUTS = {
    "expected-table.txt": ["-o", "table"],
    "expected.json": ["-o", "json"],
    "expected-plan.txt": ["--restart-plan"],
}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_audit_output_is_the_golden_one(
    name: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*COMMAND, "--kubernetes-version", "1.30", *OUTPUTS[name]])
    out, err = capsys.readouterr()
    assert code == 1, "stale and missing pods: exit 1"
    assert err == ""
    expected = HERE / name
    if request.config.getoption("--update-golden"):
        expected.write_text(out)
    assert expected.exists(), f"{expected} missing: run pytest tests/golden --update-golden"
    assert out == expected.read_text(), f"audit golden {name} changed; review and rerun with --update-golden"


def test_one_policy_alone_and_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*COMMAND, "--kubernetes-version", "1.30", "--policy", "team-a-only"]) == 0, "refused only"
    out = capsys.readouterr().out
    assert out.splitlines()[-2:] == [
        "policy team-a-only: 1 refused (1 pod)",
        "1 pod with a status annotation that cannot be read",  # shown whatever the policy
    ]
    assert "log-shipper" not in out
