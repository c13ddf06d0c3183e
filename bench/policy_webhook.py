"""What `/validate-policies` costs per policy ConfigMap write: the check of `podgraft policy validate`
plus the live-set warnings, for ConfigMaps of 1 to 256 policies.

    .venv/bin/python bench/policy_webhook.py

Feeds `validate_policy_configmap` the CREATE review a real kube-apiserver sent
(tests/unit/apiserver_stored/policy-reviews.yaml) with its data replaced, against a live set of the
example policies plus 100 more, and prints the median wall time of each. The webhook's
`timeoutSeconds` (chart default 5) must stay above what the ConfigMaps of a cluster take; past it
the apiserver applies the failurePolicy (Ignore: the write goes through, the loader judges it).
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.admission.policies import PolicyCheck, validate_policy_configmap  # noqa: E402
from app.admission.review import parse_review  # noqa: E402
from app.engine.policyset import PolicySet  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sources.documents import compile_source  # noqa: E402

STORED = ROOT / "tests" / "unit" / "apiserver_stored" / "policy-reviews.yaml"
EXAMPLES = {path.name: path.read_text() for path in sorted((ROOT / "examples" / "policies").glob("*.yaml"))}


def numbered(count: int) -> str:
    """`count` copies of the mesh-proxy example (the largest), each under names of its own."""
    text = EXAMPLES["mesh-proxy.yaml"]
    return "\n---\n".join(
        text.replace("name: mesh-proxy\n", f"name: proxy-{i}\n", 1).replace(
            "- name: mesh-proxy", f"- name: p{i}"
        )
        for i in range(count)
    )


def live_set() -> PolicySet:
    policies = []
    for key, text in EXAMPLES.items():
        policies += compile_source(f"configmap podgraft/examples key {key}", text, max_bytes=1 << 20)
    policies += compile_source("configmap podgraft/many key many.yaml", numbered(100), max_bytes=1 << 20)
    return PolicySet.build(policies)


def main() -> None:
    request = yaml.safe_load(STORED.read_text())["create"]
    check = PolicyCheck.from_settings(Settings(policy_source="configmaps"))
    live = live_set()
    cases = {
        "1 policy (log-shipper example)": {"log-shipper.yaml": EXAMPLES["log-shipper.yaml"]},
        "5 policies (the examples, 5 keys)": EXAMPLES,
        "32 policies (one key)": {"many.yaml": numbered(32)},
        "256 policies (one key, the most a key may hold)": {"many.yaml": numbered(256)},
    }
    print(f"live set: {len(live)} policies")
    for name, data in cases.items():
        sent = copy.deepcopy(request)
        sent["object"]["data"] = data
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": sent})
        rounds = 3 if len(body) > 100_000 else 20
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            verdict = validate_policy_configmap(parse_review(body.encode()), live=live, check=check)
            times.append(time.perf_counter() - started)
        print(
            f"{name}: {len(body) / 1024:.0f} KiB review, {statistics.median(times) * 1000:.1f} ms median "
            f"({rounds} rounds), {verdict.outcome}, {verdict.warnings} warnings"
        )


if __name__ == "__main__":
    main()
