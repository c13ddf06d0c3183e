"""What the node-tier tests run: the policies (with the locally built busybox image), pod templates
whose commands make behaviour observable, and the real kubectl."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.kube import INJECT

POLICY_API = {"apiVersion": "podgraft.io/v1alpha1", "kind": "InjectionPolicy"}
LOG_FILE = "/var/log/app/app.log"
PROXY_PORT = 15000
WAIT_FOR_SERVICE = "wait-for.podgraft.io/service"
# sh as PID 1 ignores SIGTERM unless it traps it: helpers exit at once when the kubelet stops them
UNTIL_STOPPED = "trap 'exit 0' TERM; while true; do sleep 1; done"


def policy(name: str, **spec: Any) -> str:
    return yaml.safe_dump({**POLICY_API, "metadata": {"name": name}, "spec": spec}, sort_keys=False)


def serve(port: int, text: str) -> str:
    """A shell line serving `text` over HTTP on `port` (busybox httpd in the foreground)."""
    return f"mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"


def sidecar_policy(name: str, *, image: str, mode: str) -> str:
    """A long-running helper that does nothing but run until it is stopped."""
    helper = {"name": "helper", "image": image, "command": ["sh", "-c", UNTIL_STOPPED]}
    return policy(name, sidecarMode=mode, sidecars=[helper])


def node_policies(image: str) -> dict[str, str]:
    """The policy files of the node tier, one ConfigMap key each."""
    logs = {"name": "app-logs", "emptyDir": {}}
    # Services are found as the kubelet's {NAME}_SERVICE_HOST/_PORT variables (there is no DNS here)
    service_name = f"pod.annotations.get('{WAIT_FOR_SERVICE}', params.service)"
    env_name = f"({service_name}) | upper | replace('-', '_')"
    return {
        # shared volume + native sidecar + kubectl debug rules
        "log-shipper.yaml": policy(
            "log-shipper",
            sidecarMode="native",
            volumes=[logs],
            volumeMounts=[{"name": "app-logs", "mountPath": "/var/log/app"}],
            env=[{"name": "LOG_FILE", "value": LOG_FILE}],
            sidecars=[
                {
                    "name": "log-shipper",
                    "image": image,
                    "command": [
                        "sh",
                        "-c",
                        "until [ -f /logs/app.log ]; do sleep 1; done; exec tail -n +1 -f /logs/app.log",
                    ],
                    "volumeMounts": [{"name": "app-logs", "mountPath": "/logs", "readOnly": True}],
                }
            ],
            ephemeral={
                "volumeMounts": [{"name": "app-logs", "mountPath": "/debug/logs", "readOnly": True}],
                "env": [{"name": "DEBUG_SESSION", "value": "{{ pod.namespace }}/{{ pod.name }}"}],
                "allowedImages": [image],
            },
        ),
        # a native sidecar that serves a port, with a startup probe the kubelet waits for
        "local-proxy.yaml": policy(
            "local-proxy",
            sidecarMode="native",
            sidecars=[
                {
                    "name": "proxy",
                    "image": image,
                    "command": ["sh", "-c", serve(PROXY_PORT, "proxy-ready")],
                    "startupProbe": {
                        "tcpSocket": {"port": PROXY_PORT},
                        "periodSeconds": 1,
                        "failureThreshold": 60,
                    },
                }
            ],
        ),
        # an init container, before the pod's own, that blocks until a Service answers
        "wait-for-service.yaml": policy(
            "wait-for-service",
            parameters={"service": "backend"},
            initContainerPosition="first",
            initContainers=[
                {
                    "name": "wait-for-service",
                    "image": image,
                    "command": ["sh", "-c"],
                    "args": [
                        f"url=http://${{{{ {env_name} }}}}_SERVICE_HOST:${{{{ {env_name} }}}}_SERVICE_PORT/; "
                        "until timeout 2 wget -q -O- $url; "
                        f"do echo waiting for {{{{ {service_name} }}}}; sleep 1; done; "
                        f"echo {{{{ {service_name} }}}} answered"
                    ],
                }
            ],
        ),
        "job-native.yaml": sidecar_policy("job-native", image=image, mode="native"),
        "job-auto.yaml": sidecar_policy("job-auto", image=image, mode="auto"),
        "job-classic.yaml": sidecar_policy("job-classic", image=image, mode="classic"),
        # a helper that runs as root with everything allowed: breaks `restricted`, not `baseline`
        "root-helper.yaml": policy(
            "root-helper",
            sidecarMode="native",
            sidecars=[{"name": "root-helper", "image": image, "command": ["sh", "-c", UNTIL_STOPPED]}],
        ),
    }


# --- workloads -------------------------------------------------------------------------------------


def app_container(image: str, **extra: Any) -> dict[str, Any]:
    """The pod's own container: prints a line, appends it to $LOG_FILE (if a policy set it), serves :8080."""
    line = 'echo "app $HOSTNAME version ${VERSION:-none}" | tee -a "${LOG_FILE:-/tmp/app.log}"'
    return {
        "name": "app",
        "image": image,
        "command": ["sh", "-c", f"{line} && {serve(8080, 'ok')}"],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        **extra,
    }


def pod_spec(containers: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "enableServiceLinks": True,
        "containers": [dict(c) for c in containers],
        **extra,
    }


def template(app: str, spec: Mapping[str, Any], *, inject: str | None) -> dict[str, Any]:
    annotations = {INJECT: inject} if inject else {}
    return {"metadata": {"labels": {"app": app}, "annotations": annotations}, "spec": dict(spec)}


def deployment(name: str, *, replicas: int, spec: Mapping[str, Any], inject: str | None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, spec, inject=inject),
        },
    }


def job(name: str, *, image: str, inject: str) -> dict[str, Any]:
    """A Job whose one container prints a line and exits 0."""
    work = {"name": "work", "image": image, "command": ["sh", "-c", "echo work done"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": template(name, pod_spec([work], restartPolicy="Never"), inject=inject),
        },
    }


def service(name: str, *, port: int = 80, target: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
    }


def admissions(log: Path, namespace: str) -> list[dict[str, Any]]:
    """Podgraft's JSON log lines for Pod admissions in `namespace`."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "admission" and line.get("namespace") == namespace]


# --- the real client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kubectl:
    """The kubectl binary built from the pinned modules, as the admin."""

    binary: Path
    kubeconfig: Path

    def run(
        self, *args: str, manifest: Mapping[str, Any] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=json.dumps(manifest) if manifest is not None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, namespace: str, manifest: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("apply", f"--namespace={namespace}", "-f", "-", manifest=manifest)
