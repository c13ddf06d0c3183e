"""Scenarios 9 and 10 of issue 3 (another mutating webhook; Podgraft unreachable), and the caBundle
command against the real API."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hack.cluster.processes import LOOPBACK, REPO, free_port

from .conftest import E2E
from .kube import INJECT, api_error, error_message, eventually, injected, names, pod
from .webhooks import Labeller, temporary_webhook, webhook_configuration

pytestmark = pytest.mark.e2e


# --- 9. reinvocation ------------------------------------------------------------------------------------


def test_reinvocation_after_another_webhook_injects_nothing_twice(e2e: E2E, tmp_path: Path) -> None:
    kube = e2e.kube
    scope = {"e2e.podgraft.io/labeller": "on"}
    ns = e2e.opted_in("reinvoke", **scope)
    labeller = Labeller.start(
        ca_cert=e2e.bundle.ca_cert,
        ca_key=e2e.bundle.ca_key,
        workdir=tmp_path,
        label="e2e.podgraft.io/labelled",
    )
    # webhooks are called in the order of their configurations' names: Podgraft's first, then this one,
    # whose change makes the apiserver call Podgraft again (reinvocationPolicy: IfNeeded)
    configuration = webhook_configuration(
        "zz-e2e-labeller",
        url=labeller.url,
        ca_bundle=e2e.bundle.ca_bundle(),
        namespace_labels=scope,
        reinvocation="IfNeeded",
    )
    assert e2e.webhook_name < configuration["metadata"]["name"]
    assert e2e.chart.webhook["webhooks"][0]["reinvocationPolicy"] == "IfNeeded"
    requested = "wait-for-db,log-shipper,mesh-proxy"
    try:
        with temporary_webhook(kube, configuration):

            def labelled() -> None:
                probe = kube.create_pod(ns, pod(name="probe", annotations={INJECT: requested}), dry_run=True)
                assert probe.body["metadata"]["labels"].get("e2e.podgraft.io/labelled") == "true"

            eventually(labelled, what="the apiserver calls the labelling webhook")
            before = e2e.podgraft.requests_total()
            kube.create_pod(ns, pod(name="twice", annotations={INJECT: requested}))
            calls = e2e.podgraft.requests_total() - before
            stored = kube.read_pod(ns, "twice")
    finally:
        labeller.stop()

    assert calls == 2, "Podgraft was not reinvoked after the labelling webhook"
    assert labeller.calls.count("twice") == 1
    assert stored["metadata"]["labels"]["e2e.podgraft.io/labelled"] == "true"
    assert sorted(injected(stored)) == ["log-shipper", "mesh-proxy", "wait-for-db"]
    spec = stored["spec"]
    for field in ("initContainers", "containers", "volumes"):
        duplicates = [n for n, count in Counter(names(spec.get(field))).items() if count > 1]
        assert duplicates == [], f"{field} injected twice: {duplicates}"
    app_env = [e["name"] for e in spec["containers"][0].get("env") or []]
    assert len(app_env) == len(set(app_env)), app_env
    app_mounts = [m["mountPath"] for m in spec["containers"][0].get("volumeMounts") or []]
    assert len(app_mounts) == len(set(app_mounts)), app_mounts


# --- 10. Podgraft unreachable -----------------------------------------------------------------------


def test_podgraft_unreachable_fail_rejects_and_ignore_admits_uninjected(e2e: E2E) -> None:
    kube = e2e.kube
    scope = {"e2e.podgraft.io/down": "true"}
    ns = kube.namespace("down", scope)  # not opted in: only the webhook below applies here
    stopped = f"https://{LOOPBACK}:{free_port()}/mutate"  # nothing listens there
    name = "e2e-podgraft-down"
    request = pod(generate_name="down-", annotations={INJECT: "wait-for-db"})

    def configuration(policy: str) -> dict[str, object]:
        return webhook_configuration(
            name,
            url=stopped,
            ca_bundle=e2e.bundle.ca_bundle(),
            failure_policy=policy,
            namespace_labels=scope,
            timeout_seconds=2,
        )

    with temporary_webhook(kube, configuration("Fail")):

        def rejected() -> str:
            return error_message(api_error(lambda: kube.create_pod(ns, request)))

        message = eventually(rejected, what="the apiserver rejects pods it cannot get admitted")
        assert f'failed calling webhook "{name}.e2e.podgraft.io"' in message
        assert "connection refused" in message

        kube.put_webhook(configuration("Ignore"))
        created = eventually(lambda: kube.create_pod(ns, request), what="failurePolicy Ignore is in effect")
        stored = kube.read_pod(ns, created.body["metadata"]["name"])
        assert injected(stored) == []
        assert "initContainers" not in stored["spec"]


# --- podgraft certs patch-ca-bundle -------------------------------------------------------------------


def test_certs_patch_ca_bundle_sets_every_webhook_and_is_idempotent(e2e: E2E) -> None:
    kube = e2e.kube
    configuration = webhook_configuration(
        "e2e-ca-bundle",
        url=e2e.podgraft.url,
        ca_bundle="unused",
        namespace_labels={"e2e.podgraft.io/never": "true"},
    )
    first = configuration["webhooks"][0]
    second = {**first, "name": "second.e2e.podgraft.io", "clientConfig": {"url": e2e.podgraft.url}}
    del first["clientConfig"]["caBundle"]
    configuration["webhooks"] = [first, second]
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "certs",
        "patch-ca-bundle",
        "--webhook=e2e-ca-bundle",
        f"--ca={e2e.workdir / 'podgraft-certs' / 'ca.crt'}",
        f"--kubeconfig={e2e.plane.admin_kubeconfig}",
    ]

    with temporary_webhook(kube, configuration):
        runs = [subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False) for _ in "12"]
        stored = kube.webhook_configuration("e2e-ca-bundle")

    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert runs[0].stdout.strip() == "e2e-ca-bundle: caBundle updated"
    assert runs[1].stdout.strip() == "e2e-ca-bundle: caBundle already current"
    assert {w["clientConfig"].get("caBundle") for w in stored["webhooks"]} == {e2e.bundle.ca_bundle()}
