"""Capture the AdmissionReviews a real kube-apiserver sends a validating webhook on policy ConfigMaps,
for the unit tests of `/validate-policies`: `.venv/bin/python -m tests.e2e.capture_policy_reviews`
(about 10 s with the binaries cached) rewrites tests/unit/apiserver_stored/policy-reviews.yaml.

The webhook is registered as the chart registers Podgraft's (rules on configmaps CREATE and UPDATE,
an objectSelector on the policy label) and allows everything; the real kubectl then creates,
updates and unlabels ConfigMaps, one with `generateName`, one as a server-side dry run. A ConfigMap
without the label is written too, to show that it is never sent. Each review is stored as it came
(`managedFields` included), keyed by what was done.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import subprocess
import tempfile
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from app.certs import generate_ca
from hack.cluster.controlplane import ControlPlane, build_binaries
from hack.cluster.processes import LOOPBACK, REPO

from .kube import POLICY_LABEL, Kube
from .webhooks import serve_reviews

OUT = REPO / "tests" / "unit" / "apiserver_stored" / "policy-reviews.yaml"
POLICY = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: log-shipper}
spec:
  sidecars:
    - name: log-shipper
      imag: fluent/fluent-bit:3.1.9
"""


def _recorder(workdir: Path) -> tuple[ThreadingHTTPServer, bytes, queue.Queue[dict[str, Any]]]:
    """A webhook that keeps every review and allows it."""
    ca, ca_key = generate_ca("capture-ca")
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        received.put(request)
        return {"uid": request["uid"], "allowed": True}

    server, _ = serve_reviews(answer, ca_cert=ca, ca_key=ca_key, workdir=workdir, name="recorder")
    return server, ca, received


def _configmap(name: str, *, labelled: bool = True, generate: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": f"{name}-"} if generate else {"name": name}
    if labelled:
        metadata["labels"] = {POLICY_LABEL: "true"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"log.yaml": POLICY}}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        plane = ControlPlane.start(workdir / "plane")
        stack.callback(plane.stop)
        kubectl = str(build_binaries(["kubectl"])["kubectl"])
        server, ca, received = _recorder(workdir)
        stack.callback(server.shutdown)
        kube = Kube(plane.admin_kubeconfig)
        kube.core.create_namespace({"metadata": {"name": "podgraft"}})
        url = f"https://{LOOPBACK}:{server.server_address[1]}/validate-policies"
        kube.admission.create_validating_webhook_configuration(
            {
                "metadata": {"name": "capture"},
                "webhooks": [
                    {
                        "name": "policies.podgraft.io",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca).decode()},
                        "rules": [
                            {
                                "operations": ["CREATE", "UPDATE"],
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["configmaps"],
                                "scope": "Namespaced",
                            }
                        ],
                        "objectSelector": {"matchLabels": {POLICY_LABEL: "true"}},
                    }
                ],
            }
        )

        def run(*args: str, manifest: Mapping[str, Any] | None = None) -> None:
            subprocess.run(
                [kubectl, f"--kubeconfig={plane.admin_kubeconfig}", "--namespace=podgraft", *args],
                input=json.dumps(manifest) if manifest else None,
                text=True,
                check=True,
                capture_output=True,
            )

        reviews: dict[str, Any] = {}

        def take(what: str) -> None:
            reviews[what] = received.get(timeout=10)

        # the webhook configuration takes a moment to be in force: retry the first write
        for _ in range(50):
            with contextlib.suppress(subprocess.CalledProcessError):
                run("apply", "-f", "-", manifest=_configmap("log-shipper"))
                break
        take("create")
        updated = _configmap("log-shipper")
        updated["data"]["second.yaml"] = POLICY.replace("log-shipper", "second")
        run("apply", "-f", "-", manifest=updated)
        take("update")
        run("label", "configmap", "log-shipper", f"{POLICY_LABEL}-")
        take("label-removed")
        run("create", "-f", "-", manifest=_configmap("generated", generate=True))
        take("generate-name")
        run("apply", "--dry-run=server", "-f", "-", manifest=_configmap("dry"))
        take("dry-run")
        run("apply", "-f", "-", manifest=_configmap("plain", labelled=False))
        run("delete", "configmap", "plain")
        assert received.empty(), "a ConfigMap without the label was sent to the webhook"
        kube.close()
    header = (
        f"# AdmissionReview requests a kube-apiserver {plane.version} sent a validating webhook on\n"
        "# configmaps CREATE/UPDATE with an objectSelector on podgraft.io/policy=true, for what the real\n"
        "# kubectl did (the key). Written by `python -m tests.e2e.capture_policy_reviews`; do not edit.\n"
    )
    OUT.write_text(header + yaml.safe_dump(reviews, sort_keys=True, width=120))


if __name__ == "__main__":
    main()
