"""Podgraft's image as `make image` builds it from the Dockerfile (hack/image/build.sh, on the bookworm
base made there): read from its layers, and run as a pod on the node as a user would run it."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from app import __version__

from .conftest import Cluster, assert_ready
from .workloads import pod_spec

COMPILERS = {"gcc", "g++", "cc", "c++", "clang", "tcc", "cpp", "as", "ld"}
SIZE_LIMIT = 250 * 1024 * 1024  # the goal for the uncompressed image


def _layers(archive: Path) -> list[list[tarfile.TarInfo]]:
    """Every layer's entries, base first, from the OCI archive."""
    with tarfile.open(archive) as outer:

        def blob(digest: str) -> bytes:
            member = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            return member.read()

        index = json.loads(blob_named(outer, "index.json"))
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        layers = []
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            raw = gzip.decompress(data) if layer["mediaType"].endswith("gzip") else data
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                layers.append(tar.getmembers())
        return layers


def blob_named(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None, name
    return member.read()


def _podgraft_archive(cluster: Cluster) -> Path:
    return next(a for a in cluster.images.archives if a.name.startswith("podgraft-"))


def test_image_has_no_pip_and_no_compiler_and_stays_under_250_mb(cluster: Cluster) -> None:
    layers = _layers(_podgraft_archive(cluster))
    assert len(layers) == 2, "the base, then the virtualenv (the final stage copies nothing else)"
    paths = [PurePosixPath(m.name.lstrip("./")) for layer in layers for m in layer]
    pip = [p for p in paths if p.name in ("pip", "pip3") or p.match("**/site-packages/pip/__init__.py")]
    pip += [p for p in paths if p.match("**/dist-packages/pip/__init__.py")]
    assert pip == [], pip
    compilers = [p for p in paths if p.parent.name == "bin" and p.name in COMPILERS]
    compilers += [p for p in paths if str(p).startswith("usr/lib/gcc/")]
    assert compilers == [], compilers
    venv = {str(m.name).lstrip("./").split("/")[0] for m in layers[1]}
    assert venv == {"opt"}, venv
    size = sum(m.size for layer in layers for m in layer)
    assert size < SIZE_LIMIT, f"{size / 2**20:.0f} MiB"


def _probe(cluster: Cluster, name: str, script: str) -> dict[str, Any]:
    """A bare pod of Podgraft's image with its own user (no runAsUser) and a read-only root."""
    container = {
        "name": "probe",
        "image": cluster.images.podgraft,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": pod_spec([container], restartPolicy="Never"),
    }


def test_image_runs_as_65532_on_a_read_only_root_and_podgraft_version_works(cluster: Cluster) -> None:
    """The image's own user, with no runAsUser in the pod. (Its group is not kept: the kubelet passes
    only the image's UID on, and the image has no passwd entry for it, so the group is 0 unless the
    pod sets runAsGroup, as the chart does.)"""
    ns = cluster.namespace("image")
    script = "id -u; id -g; podgraft --version; touch /opt/podgraft/x 2>&1 || true"
    cluster.kube.create_pod(ns, _probe(cluster, "probe", script))

    def finished(pod: dict[str, Any]) -> None:
        assert pod["status"].get("phase") == "Succeeded", pod["status"]

    cluster.wait_pods(ns, "probe", count=1, check=finished)
    lines = cluster.logs(ns, "probe", "probe").splitlines()
    assert lines[:3] == ["65532", "0", f"podgraft {__version__}"]
    assert "Read-only file system" in lines[3]


def test_the_webhook_pods_run_the_image_as_the_chart_hardens_them(cluster: Cluster) -> None:
    for pod in cluster.wait_webhook():
        assert_ready(pod)
        (container,) = pod["spec"]["containers"]
        assert container["image"].startswith(cluster.images.podgraft.rpartition(":")[0] + ":")
        assert container["imagePullPolicy"] == "Never"
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == (65532, 65532)
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["args"] == ["serve"]
