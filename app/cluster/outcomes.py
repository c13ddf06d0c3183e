"""What Podgraft tells a workload's owners about one admitted or denied pod (pure).

One note per outcome worth telling, and one per warning of the AdmissionResponse, in its own words
(the very text `kubectl` would have printed to whoever created the pod, which for a controller's
pod is nobody):

- `Injected` (Normal): policies were injected: which, their versions (content hashes), their
  containers (as the status annotation lists them);
- `InjectedWithWarnings` (Warning): a warning about what was injected (a classic sidecar in a Job, a
  port on the node's network, a Pod Security level...);
- `InjectionSkipped` (Warning): a policy was not injected (a conflict, its namespaceSelector, a render
  error, no such policy);
- `StaleInjection` (Warning): the pod carried an older version of a policy, replaced by the live one;
- `InjectionDenied` (Warning): a required policy could not be honoured, the pod was refused.

With level `warnings` only the Warning notes are told; `all` adds `Injected`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import orjson

from app.engine.inject import InjectionResult
from app.engine.podview import as_list
from app.engine.status import read_status

EventType = Literal["Normal", "Warning"]
Level = Literal["off", "warnings", "all"]

INJECTED = "Injected"
WITH_WARNINGS = "InjectedWithWarnings"
SKIPPED = "InjectionSkipped"
STALE = "StaleInjection"
DENIED = "InjectionDenied"
ACTIONS = {INJECTED: "Inject", WITH_WARNINGS: "Inject", SKIPPED: "Skip", STALE: "Update", DENIED: "Deny"}

# The engine's warnings that say a policy was not injected, and the one that says a stale one was
# replaced (tests/unit/test_cluster_outcomes.py pins each against the engine's own output).
_SKIPPED = re.compile(
    r"^podgraft: (?:policy .+ not injected: "
    r"|requested policy .+ does not exist; nothing injected for it$"
    r"|.+; not injected$"
    r"|.+ is not a valid policy name; ignored$"
    r"|only the first \d+ requested policies are considered$)",
    re.S,
)
_STALE = re.compile(r"^podgraft: policy .+: the pod carries version \S+, the live one is \S+; updated", re.S)


@dataclass(frozen=True, slots=True)
class Note:
    """What one Event says: its type, reason, action and text (`note`)."""

    type: EventType
    reason: str
    text: str

    @property
    def action(self) -> str:
        return ACTIONS[self.reason]


@functools.lru_cache(maxsize=1024)
def warning_reason(warning: str) -> str:
    """The Event reason of one AdmissionResponse warning."""
    if _SKIPPED.match(warning):
        return SKIPPED
    if _STALE.match(warning):
        return STALE
    return WITH_WARNINGS


def worth_telling(result: InjectionResult, level: Level) -> bool:
    """Cheap (the admission path asks it): could this pod's result produce a note at `level`?"""
    if level == "off":
        return False
    return bool(result.warnings or result.denial or (level == "all" and result.injected))


def notes(result: InjectionResult, *, level: Level) -> list[Note]:
    """The notes for what admission made of one pod, at `level`."""
    if level == "off":
        return []
    told = [Note("Warning", warning_reason(w), w) for w in result.warnings]
    if result.denial is not None:
        told.append(Note("Warning", DENIED, result.denial))
    elif level == "all" and result.injected and result.status is not None:
        text = injected_text(result.injected, result.status)
        told.insert(0, Note("Normal", INJECTED, text))
    return told


@functools.lru_cache(maxsize=256)
def injected_text(injected: tuple[str, ...], status: str) -> str:
    """`injected policies log-shipper (version 9d27f25cadc875af), ...; containers: log-shipper`, from
    the policies this patch applied and the status annotation Podgraft wrote (every pod of a rollout
    has the same: hence the cache)."""
    versions = read_status({"status": status}, "status")
    listed = ", ".join(
        f"{name} (version {versions[name]})" if name in versions else name for name in injected
    )
    policies = "policy" if len(injected) == 1 else "policies"
    containers = status_containers(status)
    return f"injected {policies} {listed}; " + (
        f"containers: {', '.join(containers)}" if containers else "no containers"
    )


def status_containers(status: str) -> list[str]:
    """The `containers` the status annotation lists (the containers of the policies it names)."""
    try:
        data = orjson.loads(status)
    except orjson.JSONDecodeError:
        return []
    listed = data.get("containers") if isinstance(data, dict) else None
    return [name for name in as_list(listed) if isinstance(name, str)]
