#!/usr/bin/env python3
"""Writes a one-layer OCI image archive from a root filesystem directory (stdlib only).

    image.py --rootfs DIR --name REF --out ARCHIVE [--entrypoint ARG ...] [--cmd ARG ...]

The archive is an OCI image layout in a tar, as `ctr images import` reads it; the image name is in
the index's `io.containerd.image.name` annotation. Layer and archive are reproducible: sorted
entries, owner root, mtime 0.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

OCI = "application/vnd.oci.image"


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def layer_tar(rootfs: Path) -> bytes:
    """The root filesystem as an uncompressed tar, entries sorted, paths relative to `rootfs`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False, filter=_normalised)
    return buffer.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def image_archive(*, rootfs: Path, name: str, entrypoint: list[str], cmd: list[str]) -> bytes:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/*) as tar bytes."""
    diff = layer_tar(rootfs)
    layer_digest, layer = _blob(gzip.compress(diff, mtime=0))
    config_digest, config = _blob(
        _json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": ["PATH=/bin"],
                    "Entrypoint": entrypoint or None,
                    "Cmd": cmd or None,
                    "WorkingDir": "/",
                },
                "rootfs": {"type": "layers", "diff_ids": [_blob(diff)[0]]},
            }
        )
    )
    manifest_digest, manifest = _blob(
        _json(
            {
                "schemaVersion": 2,
                "mediaType": f"{OCI}.manifest.v1+json",
                "config": {
                    "mediaType": f"{OCI}.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": f"{OCI}.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer)}
                ],
            }
        )
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": f"{OCI}.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json(index),
        **{
            f"blobs/sha256/{d.split(':')[1]}": b
            for d, b in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))
        },
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in files.items():
            info = _normalised(tarfile.TarInfo(path))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--entrypoint", nargs="*", default=[])
    parser.add_argument("--cmd", nargs="*", default=[])
    args = parser.parse_args()
    data = image_archive(rootfs=args.rootfs, name=args.name, entrypoint=args.entrypoint, cmd=args.cmd)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
