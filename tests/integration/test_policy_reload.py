"""Directory mode: policy files are reloaded while the server runs; a bad file keeps the last good set."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Metrics, Mutate, PolicyFiles, Ready
from .support import Server, decode_patch, pod, review, wait_for

pytestmark = pytest.mark.timeout(60)

RELOAD_TIMEOUT = 5.0
WAIT_FOR_DB = "wait-for-db.yaml"


def injected_init_images(mutate: Mutate, policy: str) -> list[str]:
    """Images of the init containers injected into a pod that requests `policy` (empty: none)."""
    status, body = mutate(review(pod(annotations={"podgraft.io/inject": policy})))
    assert status == 200, body
    response = body["response"]
    if "patch" not in response:
        return []
    for operation in decode_patch(response):
        if operation["path"] == "/spec/initContainers":
            return [c["image"] for c in operation["value"]]
    return []


def test_editing_a_policy_file_changes_the_next_response(mutate: Mutate, policy_files: PolicyFiles) -> None:
    assert injected_init_images(mutate, "wait-for-db") == ["busybox:1.36"]
    policy_files.write(WAIT_FOR_DB, policy_files.read(WAIT_FOR_DB).replace("busybox:1.36", "busybox:1.37"))
    wait_for(
        lambda: injected_init_images(mutate, "wait-for-db") == ["busybox:1.37"],
        timeout=RELOAD_TIMEOUT,
        what="the edited policy in force",
    )


INVALID_EDITS = [
    pytest.param(
        lambda text: text.replace("image: busybox:1.36", "image: busybox:1.99\n      imagePolicy: Always"),
        "document 1: policy 'wait-for-db': spec.initContainers[0].imagePolicy: unknown field",
        id="unknown-field",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99").replace(
            "initContainerPosition: first", "initContainerPosition: middle"
        ),
        "document 1: policy 'wait-for-db': spec.initContainerPosition: Input should be 'first' or 'last'",
        id="bad-enum-value",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99").replace(
            "name: wait-for-db\n", "name: Wait_For_DB\n", 1
        ),
        "document 1: policy 'Wait_For_DB': metadata.name: policy name 'Wait_For_DB' must be a DNS-1123 "
        "label (lower case, digits, '-')",
        id="bad-policy-name",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99").replace("memory: 32Mi", "memory: lots"),
        "document 1: policy 'wait-for-db': spec.initContainers[0].resources.limits.memory: 'lots' is not a "
        "quantity",
        id="kubernetes-value",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99").replace("runAsNonRoot", "runAsNonRooot"),
        "document 1: policy 'wait-for-db': spec.initContainers[0].securityContext.runAsNonRooot: unknown "
        "field in Kubernetes 1.29; did you mean 'runAsNonRoot'?",
        id="kubernetes-schema",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99").replace(
            "{{ params.port }}", "{{ params.port % 1 }}"
        ),
        "document 1: policy 'wait-for-db': spec.initContainers[0].args[0]: '%' string formatting is not "
        "allowed",
        id="refused-template",
    ),
    pytest.param(
        lambda text: text.replace("busybox:1.36", "busybox:1.99") + "\n  broken: [unclosed\n",
        "not valid YAML",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("edit", "message"), INVALID_EDITS)
def test_invalid_policy_file_keeps_the_previous_policy_and_is_reported(
    mutate: Mutate,
    ready: Ready,
    metrics: Metrics,
    server: Server,
    policy_files: PolicyFiles,
    edit: Any,
    message: str,
) -> None:
    before = metrics()
    policy_files.write(WAIT_FOR_DB, edit(policy_files.read(WAIT_FOR_DB)))

    status, detail = wait_for(
        ready,
        until=lambda r: r[1]["policyErrors"],
        timeout=RELOAD_TIMEOUT,
        what="/readyz reporting the policy error",
    )
    assert list(detail["policyErrors"]) == [WAIT_FOR_DB], "the error names the file"
    assert message in detail["policyErrors"][WAIT_FOR_DB], "the error names the policy and field"
    assert status == 200, "a bad file does not make the server unready: the last good set is in force"
    assert detail["ready"] is True
    assert detail["policies"] == 5

    assert injected_init_images(mutate, "wait-for-db") == ["busybox:1.36"], "the previous policy stays"

    after = metrics()
    assert after["podgraft_policy_invalid_sources"] == 1
    assert after["podgraft_policy_errors_total"] == before["podgraft_policy_errors_total"] + 1
    assert after["podgraft_policies_loaded"] == 5

    def logged() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in reversed(server.log_records())
                if r.get("source") == WAIT_FOR_DB and message in str(r.get("error"))
            ),
            None,
        )

    record = wait_for(logged, what="the policy error in the log")
    assert record["level"] == "error"
    assert record["msg"] == "policy file rejected; last good version kept"


def test_fixing_an_invalid_file_clears_the_error(
    mutate: Mutate, ready: Ready, metrics: Metrics, policy_files: PolicyFiles
) -> None:
    good = policy_files.read(WAIT_FOR_DB)
    policy_files.write(WAIT_FOR_DB, good + "\n  broken: [unclosed\n")
    wait_for(lambda: ready()[1]["policyErrors"], timeout=RELOAD_TIMEOUT, what="the policy error")
    policy_files.write(WAIT_FOR_DB, good.replace("busybox:1.36", "busybox:1.38"))
    wait_for(
        lambda: injected_init_images(mutate, "wait-for-db") == ["busybox:1.38"],
        timeout=RELOAD_TIMEOUT,
        what="the fixed policy in force",
    )
    assert ready()[1]["policyErrors"] == {}
    assert metrics()["podgraft_policy_invalid_sources"] == 0


EXTRA = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: extra-one}
spec:
  initContainers:
    - {name: extra-one, image: "busybox:1.36", command: ["true"]}
---
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: extra-two}
spec:
  initContainers:
    - {name: extra-two, image: "busybox:1.36", command: ["true"]}
  initContainerPosition: last
"""


def test_new_file_with_several_documents_adds_policies_and_deleting_it_removes_them(
    mutate: Mutate, ready: Ready, policy_files: PolicyFiles
) -> None:
    policy_files.write("extra.yaml", EXTRA)
    wait_for(lambda: ready()[1]["policies"] == 7, timeout=RELOAD_TIMEOUT, what="7 policies loaded")
    status, body = mutate(review(pod(annotations={"podgraft.io/inject": "extra-two,extra-one"})))
    assert status == 200
    assert "warnings" not in body["response"]
    policy_files.delete("extra.yaml")
    wait_for(lambda: ready()[1]["policies"] == 5, timeout=RELOAD_TIMEOUT, what="5 policies loaded")
    status, body = mutate(review(pod(annotations={"podgraft.io/inject": "extra-one"})))
    assert body["response"]["warnings"] == [
        "podgraft: requested policy 'extra-one' does not exist; nothing injected for it"
    ]


def test_a_policy_name_defined_by_two_files_is_reported(ready: Ready, policy_files: PolicyFiles) -> None:
    policy_files.write("zz-copy.yaml", policy_files.read(WAIT_FOR_DB).replace("busybox:1.36", "busybox:1.99"))
    status, detail = wait_for(
        ready,
        until=lambda r: r[1]["policyErrors"],
        timeout=RELOAD_TIMEOUT,
        what="the duplicate reported",
    )
    assert detail["policyErrors"] == {
        "zz-copy.yaml": "policy 'wait-for-db' is already defined by wait-for-db.yaml; ignored"
    }
    assert status == 200
