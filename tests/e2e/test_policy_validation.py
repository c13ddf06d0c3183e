"""A broken policy refused at apply time (issue 17, section 2): the chart's ValidatingWebhookConfiguration
against the real apiserver, with the real kubectl. The configuration is in place for this module
only (the other modules write broken policies on purpose, to test the loader)."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from hack.cluster.controlplane import build_binaries

from .conftest import E2E
from .kube import INJECT, POLICY_LABEL, eventually, injected, pod
from .webhooks import with_url

pytestmark = pytest.mark.e2e

BROKEN = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: log-forwarder}
spec:
  initContainerPosition: middle
  volumes:
    - name: app-logs
      emptyDir: {}
  sidecars:
    - name: log-forwarder
      image: fluent/fluent-bit:3.1.9
      resources:
        limits: {memory: 64MB}
      volumeMounts:
        - name: app-logs
          mountPath: /var/log/app
          mountPropagation: hostToContainer
"""
UNPINNED = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: log-archiver}
spec:
  initContainers:
    - name: archive
      image: busybox
      command: [sh, -c, "mkdir -p /var/log/app/archive"]
"""
FIXED = BROKEN.replace("middle", "last").replace("64MB", "64Mi").replace("hostToContainer", "HostToContainer")
PINNED = UNPINNED.replace("image: busybox\n", "image: busybox:1.37\n")
BROKEN_DATA = {"log-forwarder.yaml": BROKEN, "log-archiver.yaml": UNPINNED}
FIXED_DATA = {"log-forwarder.yaml": FIXED, "log-archiver.yaml": PINNED}


def _manifest(name: str, namespace: str, data: Mapping[str, str], *, labelled: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {POLICY_LABEL: "true"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(data)}


@pytest.fixture(scope="module")
def kubectl(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    """The pinned kubectl, with the chart's validating configuration pointed at Podgraft."""
    configuration = with_url(
        e2e.chart.validating, e2e.podgraft.url.removesuffix("/mutate") + "/validate-policies"
    )
    name = configuration["metadata"]["name"]
    e2e.kube.admission.create_validating_webhook_configuration(configuration)
    tool = Kubectl(
        build_binaries(["kubectl"])["kubectl"], e2e.plane.admin_kubeconfig, tmp_path_factory.mktemp("kubectl")
    )
    probe = _manifest("probe", e2e.policy_namespace, BROKEN_DATA)

    def refused() -> None:
        result = tool.apply(probe, "--dry-run=server", check=False)
        assert "denied the request" in result.stderr, result.stderr

    eventually(refused, what="the apiserver calls /validate-policies")
    try:
        yield tool
    finally:
        with contextlib.suppress(ApiException):
            e2e.kube.admission.delete_validating_webhook_configuration(name)


class Kubectl:
    """The real kubectl, as the admin; manifests are written to a file named after the ConfigMap, as a
    user would apply them."""

    def __init__(self, binary: Path, kubeconfig: Path, workdir: Path) -> None:
        self.binary, self.kubeconfig, self.workdir = binary, kubeconfig, workdir

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(
        self, manifest: Mapping[str, Any], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        path = self.workdir / f"{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(dict(manifest), sort_keys=False))
        return self.run("apply", "-f", path.name, *args, check=check)


def _validations(e2e: E2E) -> dict[str, float]:
    """podgraft_policy_validations_total by outcome."""
    text = e2e.podgraft.get("/metrics")[1].decode()
    pattern = re.compile(r'^podgraft_policy_validations_total\{outcome="(\w+)"\} (\S+)$', re.M)
    return {outcome: float(value) for outcome, value in pattern.findall(text)}


def _shown(result: subprocess.CompletedProcess[str]) -> str:
    """What the user saw (the README copies it from a run with -s)."""
    text = f"$ kubectl apply -f ...; exit {result.returncode}\n{result.stdout}{result.stderr}"
    print(text)
    return text


def test_kubectl_apply_of_a_broken_policy_fails_naming_every_field_and_a_fixed_one_goes_live(
    e2e: E2E, kubectl: Kubectl
) -> None:
    where = e2e.policy_namespace
    before = _validations(e2e)
    refused = kubectl.apply(_manifest("log-forwarder", where, BROKEN_DATA), check=False)
    _shown(refused)

    assert refused.returncode == 1
    prefix = f"configmap {where}/log-forwarder key log-forwarder.yaml: document 1: policy 'log-forwarder': "
    lines = refused.stderr.splitlines()
    assert lines[:1] == [
        "Warning: podgraft: key log-archiver.yaml: document 1: policy 'log-archiver': "
        "spec.initContainers[0].image: image 'busybox' has no tag or digest, so it is :latest: each node "
        "runs whatever it is when the node pulls it; pin a tag or a digest"
    ]
    assert lines[1] == (
        'Error from server (Forbidden): error when creating "log-forwarder.yaml": admission webhook '
        f'"policies.podgraft.io" denied the request: podgraft: 3 errors in policy ConfigMap {where}/'
        "log-forwarder, which would not load:"
    )
    quantity = "'64MB' is not a quantity (like 512Mi, 1Gi, 250m, 0.5, 1e3)"
    assert lines[2:] == [
        prefix + "spec.initContainerPosition: Input should be 'first' or 'last'",
        prefix + f"spec.sidecars[0].resources.limits.memory: {quantity}",
        prefix + "spec.sidecars[0].volumeMounts[0].mountPropagation: 'hostToContainer' is not one of 'None', "
        "'HostToContainer', 'Bidirectional'; did you mean 'HostToContainer'?",
    ]
    missing = kubectl.run("get", f"--namespace={where}", "configmap/log-forwarder", check=False)
    assert "NotFound" in missing.stderr
    assert _validations(e2e).get("denied", 0) == before.get("denied", 0) + 1

    applied = kubectl.apply(_manifest("log-forwarder", where, FIXED_DATA))
    _shown(applied)
    assert applied.stdout.strip() == "configmap/log-forwarder created"
    assert applied.stderr == ""  # no warning either
    ns = e2e.opted_in("validated")

    def in_force() -> None:
        body = e2e.kube.create_pod(
            ns, pod(name="probe", annotations={INJECT: "log-forwarder"}), dry_run=True
        ).body
        assert injected(body) == ["log-forwarder"], body["metadata"]

    eventually(in_force, what="the fixed policy is loaded")
    assert _validations(e2e).get("allowed", 0) == before.get("allowed", 0) + 1
    counted = _validations(e2e)
    kubectl.run("delete", f"--namespace={where}", "configmap/log-forwarder")  # a DELETE is never sent
    assert _validations(e2e) == counted


def test_configmaps_without_the_label_or_outside_the_policy_namespaces_are_never_sent(
    e2e: E2E, kubectl: Kubectl
) -> None:
    before = _validations(e2e)
    plain = kubectl.apply(_manifest("app-settings", e2e.policy_namespace, BROKEN_DATA, labelled=False))
    elsewhere = kubectl.apply(_manifest("log-forwarder", e2e.kube.namespace("app"), BROKEN_DATA))
    assert plain.stdout.strip() == "configmap/app-settings created"
    assert elsewhere.stdout.strip() == "configmap/log-forwarder created"
    kubectl.run("delete", f"--namespace={e2e.policy_namespace}", "configmap/app-settings")
    assert _validations(e2e) == before


def test_podgraft_down_under_ignore_lets_the_write_through_and_the_loader_still_refuses_it(
    e2e: E2E, kubectl: Kubectl
) -> None:
    where = e2e.policy_namespace
    assert e2e.chart.validating["webhooks"][0]["failurePolicy"] == "Ignore"
    e2e.podgraft.stop()
    try:
        written = eventually(
            lambda: kubectl.apply(_manifest("while-down", where, {"while-down.yaml": BROKEN})),
            what="the write goes through",
        )
    finally:
        e2e.podgraft.restart()
    assert written.stdout.strip() == "configmap/while-down created"

    def rejected() -> dict[str, Any]:
        events = [
            e
            for e in e2e.kube.events_for(where, "ConfigMap", "while-down")
            if e["reason"] == "PolicyRejected"
        ]
        assert events, "no PolicyRejected Event yet"
        return events[0]

    event = eventually(rejected, what="the loader rejects the ConfigMap")
    assert "spec.sidecars[0].resources.limits.memory" in event["message"]
    key = f"configmap {where}/while-down key while-down.yaml"
    assert key in e2e.podgraft.readiness()["policyErrors"]

    # removing the label of the broken ConfigMap is sent (the old object has it) and never refused
    before = _validations(e2e)
    unlabelled = kubectl.run("label", f"--namespace={where}", "configmap/while-down", f"{POLICY_LABEL}-")
    assert unlabelled.stdout.strip() == "configmap/while-down unlabeled"
    assert _validations(e2e).get("ignored", 0) == before.get("ignored", 0) + 1
    eventually(
        lambda: _check(key not in e2e.podgraft.readiness()["policyErrors"]),
        what="the unlabelled one is unloaded",
    )
    kubectl.run("delete", f"--namespace={where}", "configmap/while-down")


def _check(condition: bool) -> None:
    assert condition
