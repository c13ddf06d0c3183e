"""The webhook's caBundle: the guarded JSON patch of app/cluster/cabundle.py and the PEM check of
`read_ca_bundle` (app/certs.py) that `podgraft certs patch` relies on."""

from __future__ import annotations

import base64
from pathlib import Path

import jsonpatch
import pytest

from app.certs import generate_ca, read_ca_bundle
from app.cluster.cabundle import ca_bundle_patch


def test_ca_bundle_patch_sets_every_stale_entry_behind_a_resource_version_guard() -> None:
    configuration = {
        "metadata": {"name": "podgraft", "resourceVersion": "7"},
        "webhooks": [
            {"name": "a.podgraft.io", "clientConfig": {"caBundle": "old"}},
            {"name": "b.podgraft.io", "clientConfig": {"caBundle": "new"}},
            {"name": "c.podgraft.io", "clientConfig": {"url": "https://x"}},
            {"name": "d.podgraft.io"},
        ],
    }
    ops = ca_bundle_patch(configuration, "new")
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    patched = jsonpatch.apply_patch(configuration, ops)
    assert [w["clientConfig"]["caBundle"] for w in patched["webhooks"]] == ["new"] * 4
    assert [w["name"] for w in patched["webhooks"]] == [w["name"] for w in configuration["webhooks"]]
    assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == "old", "the input is not modified"
    moved = {**configuration, "metadata": {"name": "podgraft", "resourceVersion": "8"}}
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(moved, ops)


def test_ca_bundle_patch_is_empty_when_current_and_refuses_an_empty_configuration() -> None:
    current = {"webhooks": [{"name": "a", "clientConfig": {"caBundle": "x"}}]}
    assert ca_bundle_patch(current, "x") == []
    with pytest.raises(ValueError, match="has no webhooks"):
        ca_bundle_patch({"metadata": {"name": "empty"}, "webhooks": []}, "x")


def test_read_ca_bundle_checks_the_pem(tmp_path: Path) -> None:
    ca_cert, _ = generate_ca()
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    assert base64.b64decode(read_ca_bundle(tmp_path / "ca.crt")) == ca_cert
    (tmp_path / "junk").write_text("not a certificate")
    with pytest.raises(ValueError, match="no PEM certificate"):
        read_ca_bundle(tmp_path / "junk")
