"""Fixtures of the integration tier: one real `podgraft serve` over real TLS per session.

The shared server runs with default limits and the example policies (copied to a temporary
directory, so tests may edit them: `policy_files` puts every file back and waits for the reload).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import Server, build_server, client_context, parse_metrics, running, wait_for

# A short certificate check interval, so rotation tests see the new certificate within a second.
SERVER_ENV = {"PODGRAFT_CERT_RELOAD_INTERVAL_SECONDS": "0.25"}

Mutate = Callable[[Any], tuple[int, dict[str, Any]]]
Metrics = Callable[[], dict[str, float]]
Ready = Callable[[], tuple[int, dict[str, Any]]]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: example policies (an editable copy), default limits, fast certificate checks."""
    with running(build_server(tmp_path_factory.mktemp("podgraft"), env=SERVER_ENV)) as started:
        yield started


@pytest.fixture(scope="session")
def tls_context(server: Server) -> ssl.SSLContext:
    """A client context that trusts only the CA written by `podgraft certs generate`."""
    return client_context(server.ca_file)


@pytest.fixture(scope="session")
def client(server: Server, tls_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, verify=tls_context, timeout=10.0) as http:
        yield http


@pytest.fixture
def mutate(client: httpx.Client) -> Mutate:
    """POST a JSON body to /mutate; return (status, decoded body), checking it is JSON."""

    def call(body: Any) -> tuple[int, dict[str, Any]]:
        response = client.post("/mutate", json=body)
        assert response.headers["content-type"] == "application/json", response.headers
        decoded: dict[str, Any] = response.json()
        return response.status_code, decoded

    return call


@pytest.fixture
def metrics(client: httpx.Client) -> Metrics:
    """The current /metrics samples, parsed."""

    def read() -> dict[str, float]:
        response = client.get("/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)

    return read


@pytest.fixture
def ready(client: httpx.Client) -> Ready:
    """The current /readyz status and JSON detail."""

    def read() -> tuple[int, dict[str, Any]]:
        response = client.get("/readyz")
        detail: dict[str, Any] = response.json()
        return response.status_code, detail

    return read


class PolicyFiles:
    """Edits of the served policy directory that can be undone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved: dict[Path, bytes | None] = {}

    def _remember(self, path: Path) -> None:
        if path not in self.saved:
            self.saved[path] = path.read_bytes() if path.exists() else None

    def write(self, name: str, text: str) -> Path:
        """Write through a hidden temporary file (the loader skips dot files), renamed over the target."""
        path = self.directory / name
        self._remember(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def read(self, name: str) -> str:
        return (self.directory / name).read_text(encoding="utf-8")

    def delete(self, name: str) -> None:
        path = self.directory / name
        self._remember(path)
        path.unlink()

    def restore(self) -> bool:
        """Put every file back; True when something had to change."""
        changed = False
        for path, content in self.saved.items():
            current = path.read_bytes() if path.exists() else None
            if current == content:
                continue
            changed = True
            if content is None:
                path.unlink()
            else:
                self.write(path.name, content.decode("utf-8"))
        return changed


@pytest.fixture
def policy_files(server: Server, metrics: Metrics, ready: Ready) -> Iterator[PolicyFiles]:
    """The served policy directory, restored after the test.

    After restoring, waits until the server has reloaded the directory and reports no error, so
    the next test sees the example policies again.
    """
    files = PolicyFiles(server.policy_dir)
    yield files
    reloads = metrics()["podgraft_policy_reloads_total"]
    if not files.restore():
        return
    wait_for(
        lambda: metrics()["podgraft_policy_reloads_total"] > reloads, what="the restored policies reloaded"
    )
    wait_for(lambda: ready()[1]["policyErrors"] == {}, what="no policy errors after the restore")
