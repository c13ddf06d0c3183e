"""The CLI's `podgraft certs generate`: the files it writes, the serving certificate's names, and the
caBundle printed only when asked."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography import x509

from app.cli import main

pytestmark = pytest.mark.usefixtures("clean_env")


# --- certs generate -------------------------------------------------------------------------------


def test_certs_generate_prints_no_bare_base64_unless_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["certs", "generate", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"the webhook's caBundle is base64 of {tmp_path}/ca.crt" in err


def test_certs_generate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "certs"
    code = main(
        [
            "certs",
            "generate",
            "--service",
            "hook",
            "--namespace",
            "infra",
            "--out",
            str(out_dir),
            "--host",
            "10.1.2.3",
            "--print-ca-bundle",
        ]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert sorted(p.name for p in out_dir.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert base64.b64decode(out.strip()) == (out_dir / "ca.crt").read_bytes()
    assert out.count("\n") == 1
    assert "wrote" in err
    assert stat.S_IMODE((out_dir / "tls.key").stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((out_dir / "tls.crt").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "hook",
        "hook.infra",
        "hook.infra.svc",
        "hook.infra.svc.cluster.local",
        "localhost",
    ]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate((out_dir / "ca.crt").read_bytes()))
