"""The server's running audit: one small record per audited pod, counts by policy and state (pure).

A pod watch (`app.cluster.census`) turns each pod into a `PodRecord` as it arrives (the pod itself is
not kept) and hands the census `Listed`/`Changed` events; `counts()` is what `podgraft_pods{policy,
state}` exports and `snapshot()` what `/audit` answers. Memory is bounded by the number of audited
pods: a record holds the pod's namespace and name and, per policy, its state, plus a short detail for
the states that need a look (not `current`). Pods with nothing to audit are not kept at all.

The states depend on the policies and the namespaces' labels, so when either changes the census is
marked stale and its watch lists the pods again (at most every `refresh_seconds`; see the watch).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.audit.classify import PodAudit

MAX_DETAIL = 200
MAX_LISTED = 100  # non-current entries `/audit` lists (the counts cover every pod)


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    states: tuple[tuple[str, str, str], ...]  # (policy, state, detail; "" when current)


def record(audit: PodAudit) -> PodRecord | None:
    """What the census keeps of one audited pod; None when no policy concerns it."""
    if not audit.policies:
        return None
    states = tuple(
        (
            sys.intern(item.policy),
            sys.intern(item.state),
            "" if item.state == "current" else item.detail[:MAX_DETAIL],
        )
        for item in audit.policies
    )
    return PodRecord(sys.intern(audit.namespace), audit.name, states)


class Census:
    """Records by pod uid; written by one watch thread, read by the event loop (whole-dict swaps)."""

    def __init__(self) -> None:
        self._records: dict[str, PodRecord] = {}
        self.synced = False

    def __len__(self) -> int:
        return len(self._records)

    def replace(self, records: Mapping[str, PodRecord]) -> None:
        self._records = dict(records)  # one reference swap
        self.synced = True

    def put(self, uid: str, item: PodRecord | None) -> None:
        if item is None:
            self._records.pop(uid, None)
        else:
            self._records[uid] = item

    def remove(self, uid: str) -> None:
        self._records.pop(uid, None)

    def counts(self) -> Counter[tuple[str, str]]:
        """Pods by (policy, state)."""
        found: Counter[tuple[str, str]] = Counter()
        for item in list(self._records.values()):
            for policy, state, _ in item.states:
                found[(policy, state)] += 1
        return found

    def snapshot(self) -> dict[str, Any]:
        """`/audit`: counts per policy and state, and the first entries that are not current."""
        per_policy: dict[str, dict[str, int]] = {}
        for (policy, state), count in sorted(self.counts().items()):
            per_policy.setdefault(policy, {})[state] = count
        attention: list[dict[str, str]] = []
        for item in sorted(self._records.values(), key=lambda r: (r.namespace, r.name)):
            for policy, state, detail in item.states:
                if state != "current" and len(attention) < MAX_LISTED:
                    attention.append(
                        {
                            "namespace": item.namespace,
                            "pod": item.name,
                            "policy": policy,
                            "state": state,
                            "detail": detail,
                        }
                    )
        return {
            "synced": self.synced,
            "pods": len(self._records),
            "policies": per_policy,
            "notCurrent": attention,
        }


Classifier = Callable[[Mapping[str, Any]], PodAudit | None]
