"""Session fixture of the e2e tier: a real etcd + kube-apiserver, Podgraft in configmaps mode, and the
Helm chart's webhook configuration pointing at it (see `stack.start_stack` for the order).
Everything is torn down in reverse order, whatever happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from hack.cluster.processes import REPO

from .kube import Kube
from .stack import E2E, start_stack

POLICY_NAMESPACE = "podgraft-policies"  # a second watched namespace, besides Podgraft's own

E2E_POLICIES = {
    "team-a-only.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: team-a-only}
spec:
  namespaceSelector: {matchLabels: {team: a}}
  env: [{name: TEAM, value: a}]
""",
    "needs-image.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: needs-image}
spec:
  required: true
  initContainers:
    - name: setup
      image: "{{ pod.annotations['e2e.podgraft.io/setup-image'] }}"
""",
    "classic-helper.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: classic-helper}
spec:
  sidecarMode: classic
  volumes: [{name: scratch, emptyDir: {}}]
  volumeMounts: [{name: scratch, mountPath: /scratch}]
  sidecars:
    - name: helper
      image: busybox:1.36
      command: [sh, -c, "sleep infinity"]
      volumeMounts: [{name: scratch, mountPath: /scratch}]
""",
}

TIMINGS: dict[str, Any] = {}


# Installed as the chart renders them from `policies.definitions` (templates/policies.yaml).
CHART_POLICIES = {
    "chart-defaults": {"env": [{"name": "FROM_CHART", "value": "{{ pod.namespace }}"}]},
}


def example_policies() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((REPO / "examples" / "policies").glob("*.yaml"))}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    with contextlib.ExitStack() as stack:
        yield start_stack(
            stack,
            tmp_path_factory.mktemp("e2e"),
            policies={**example_policies(), **E2E_POLICIES},
            chart_policies=CHART_POLICIES,
            policy_namespace=POLICY_NAMESPACE,
            warmup_policy="wait-for-db",
            timings=TIMINGS,
        )


@pytest.fixture
def kube(e2e: E2E) -> Kube:
    return e2e.kube


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_line(
            "e2e: kube-apiserver {kubernetes}; build/cache check {build:.1f}s, control plane up in "
            "{controlplane:.1f}s, podgraft ready in {podgraft:.1f}s, session setup {setup:.1f}s".format(
                **{"podgraft": 0.0, "setup": 0.0, **TIMINGS}
            )
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing e2e test shows the end of Podgraft's and the apiserver's logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    env = getattr(item, "funcargs", {}).get("e2e")
    if report.failed and isinstance(env, E2E):
        for process in [env.podgraft.process, *env.plane.processes]:
            report.sections.append((f"{process.name} log (tail)", process.tail(60)))
