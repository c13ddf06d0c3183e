"""Podgraft as the e2e tier runs it: `podgraft serve` in configmaps mode (with the running audit) as a
real uvicorn process over TLS, started, stopped and restarted on its port, probed and scraped."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hack.cluster.processes import LOOPBACK, REPO, Managed, free_port, https_get, wait_for


@dataclass
class Podgraft:
    """`podgraft serve` in configmaps mode, as a real uvicorn process over TLS."""

    process: Managed
    port: int
    ca_file: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/mutate"

    @classmethod
    def start(
        cls,
        *,
        workdir: Path,
        kubeconfig: Path,
        certs: Path,
        namespace: str,
        policy_namespaces: Sequence[str],
        wait: bool = True,
        name: str = "podgraft",
        pod_name: str = "podgraft-e2e-0",
    ) -> Podgraft:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRAFT_")}
        env.update(
            POD_NAMESPACE=namespace,
            PODGRAFT_POLICY_NAMESPACES=",".join(policy_namespaces),
            PODGRAFT_DRAIN_SECONDS="0",
            PODGRAFT_AUDIT_ENABLED="true",
            PODGRAFT_AUDIT_REFRESH_SECONDS="1",
            PODGRAFT_EVENTS="all",  # every reason, Injected too
            PODGRAFT_EVENTS_FLUSH_SECONDS="0.5",
            POD_NAME=pod_name,  # the Events' reportingInstance
            PYTHONUNBUFFERED="1",
        )
        argv = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--policy-source=configmaps",
            f"--kubeconfig={kubeconfig}",
            f"--tls-cert={certs / 'tls.crt'}",
            f"--tls-key={certs / 'tls.key'}",
            f"--host={LOOPBACK}",
            f"--port={port}",
            "--log-level=info",
        ]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        process = Managed.spawn(name, argv, log_path=workdir / "logs" / f"{name}.log", env=env)
        server = cls(process, port, certs / "ca.crt", argv, env)
        if not wait:
            wait_for(server.answers, timeout=60, what=f"{name} /healthz", process=process)
            return server
        server._wait_ready()
        return server

    def _wait_ready(self) -> None:
        try:
            wait_for(self.ready, timeout=60, what=f"{self.process.name} /readyz", process=self.process)
        except BaseException:
            self.process.stop()
            raise

    def restart(self) -> None:
        """Start the same server again, on the same port, after `stop()`; wait until it is ready."""
        name, log_path = self.process.name, self.process.log_path
        self.process = Managed.spawn(name, self.argv, log_path=log_path, env=self.env)
        self._wait_ready()

    def get(self, path: str) -> tuple[int, bytes]:
        return https_get(self.port, path, ca_file=self.ca_file)

    def answers(self) -> bool:
        return self.get("/healthz")[0] == 200

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def readiness(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/readyz")[1]))

    def requests_total(self) -> float:
        """podgraft_admission_requests_total, all outcomes."""
        text = self.get("/metrics")[1].decode()
        pattern = re.compile(r"^podgraft_admission_requests_total\{[^}]*\} (\S+)$", re.M)
        return sum(float(value) for value in pattern.findall(text))

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None when absent)."""
        text = self.get("/metrics")[1].decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    def stop(self) -> None:
        self.process.stop()
