"""A setting that does not validate, from the environment or a flag, is a usage error on one line."""

from __future__ import annotations

import pytest

from app.cli import main


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "argv", "line"),
    [
        pytest.param(
            {"PODGRAFT_EVENTS": "verbose"},
            ["serve"],
            "error: PODGRAFT_EVENTS: Input should be 'off', 'warnings' or 'all'",
            id="environment",
        ),
        pytest.param(
            {},
            ["serve", "--port", "99999"],
            "error: --port: Input should be less than or equal to 65535",
            id="flag",
        ),
        pytest.param(
            {"PODGRAFT_WORKERS": "many"},
            ["audit", "-f", "/dev/null"],
            "error: PODGRAFT_WORKERS: Input should be a valid integer, unable to parse string as an integer",
            id="another-command",
        ),
    ],
)
def test_a_bad_setting_is_a_usage_error_without_a_traceback(
    env: dict[str, str],
    argv: list[str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == line
    assert "Traceback" not in err
