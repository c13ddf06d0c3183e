"""app/rollout/report.py and the flags of `podgraft rollout` and `podgraft explain`: the dry run's plan,
the results, the summary, the JSON document and the exit codes."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from app.audit.owners import Owner
from app.cli import build_parser
from app.cli.explain import parse_target
from app.cli.rollout import duration
from app.rollout.disruption import Gate
from app.rollout.plan import Blocked, Plan, Target, waves
from app.rollout.report import Report, as_data, event_line, exit_code, planned, progress_bar, settled, text
from app.rollout.runner import Event, Outcome, Preflight

WEB, API = Owner("shop", "Deployment", "web"), Owner("shop", "Deployment", "api")
DB, JOB = Owner("shop", "StatefulSet", "db"), Owner("shop", "Job", "nightly")


def _target(owner: Owner, pods: int = 2) -> Target:
    return Target(
        owner, pods, (("log-shipper", "stale", pods),), f"{owner.name}-1: log-shipper f8 -> 9d: image"
    )


PLAN = Plan(
    targets=(_target(API), _target(WEB)),
    current=(Target(Owner("shop", "DaemonSet", "agent"), 1, ()),),
    cannot=(
        Blocked(
            _target(DB), "updateStrategy OnDelete: the controller replaces a pod only when it is deleted"
        ),
    ),
    untouched=(Target(JOB, 1, (("log-shipper", "missing", 1),)),),
    waves=waves(["shop"], 1),
)


def test_the_dry_run_shows_the_order_why_each_and_what_is_left_alone() -> None:
    checks = {
        API: Preflight("ok", "a dry-run pod from its template gets log-shipper 9d27 (live)"),
        WEB: Preflight("ok", "x"),
    }
    report = Report(
        PLAN,
        (*planned(PLAN, checks, {}), *settled(PLAN)),
        dry_run=True,
        notes={API: (checks[API].message, "PodDisruptionBudget api allows 1 disruption"), WEB: ("x", "")},
    )
    out = text(report)
    assert out.splitlines()[:7] == [
        "dry run: nothing is restarted (--yes restarts, in this order)",
        "wave 1 of 1: namespace shop",
        "  1. shop deployment/api: log-shipper stale on 2 of 2 pods",
        "       api-1: log-shipper f8 -> 9d: image",
        "       preflight: a dry-run pod from its template gets log-shipper 9d27 (live)",
        "       disruption: PodDisruptionBudget api allows 1 disruption",
        "  2. shop deployment/web: log-shipper stale on 2 of 2 pods",
    ]
    assert "  shop statefulset/db: updateStrategy OnDelete: " in out
    assert "already current: shop daemonset/agent" in out
    assert "  shop Job/nightly: log-shipper missing on 1 of 1 pods" in out
    assert out.endswith(
        "summary: 2 to restart, 1 already current, 1 blocked, 0 failed (1 without a rollout, not touched)\n"
    )
    assert exit_code(report) == 1


def test_a_run_where_everything_was_restarted_exits_0_and_one_with_anything_left_1() -> None:
    plan = Plan(targets=(_target(WEB),), waves=(("shop",),))
    done = Report(plan, (Outcome(_target(WEB), "restarted", "rolled out"),), dry_run=False)
    assert exit_code(done) == 0
    assert text(done).endswith("summary: 1 restarted, 0 already current, 0 blocked, 0 failed\n")
    for result in ("blocked", "failed", "not-started", "interrupted"):
        assert exit_code(Report(plan, (Outcome(_target(WEB), result, "why"),), dry_run=False)) == 1  # type: ignore[arg-type]
    assert (
        exit_code(Report(PLAN, (Outcome(_target(WEB), "restarted", ""),), dry_run=False)) == 1
    )  # a Job left


def test_a_failed_preflight_in_the_plan_is_a_failure() -> None:
    checks = {
        API: Preflight("stop", "the webhook did not inject log-shipper: ..."),
        WEB: Preflight("blocked", "refused"),
    }
    [api, web] = planned(PLAN, checks, {})
    assert (api.result, api.reason) == ("failed", "preflight: the webhook did not inject log-shipper: ...")
    assert (web.result, web.reason) == ("blocked", "preflight: refused")


def test_a_budget_that_can_never_allow_a_disruption_is_blocked_in_the_plan_already() -> None:
    ok = {API: Preflight("ok", "fine"), WEB: Preflight("ok", "fine")}
    gates = {
        API: Gate("never", "PodDisruptionBudget api can never allow a disruption"),
        WEB: Gate("wait", "not now"),
    }
    [api, web] = planned(PLAN, ok, gates)
    assert (api.result, api.reason) == ("blocked", "PodDisruptionBudget api can never allow a disruption")
    assert web.result == "planned"
    out = text(
        Report(
            PLAN,
            (api, web),
            dry_run=True,
            notes={API: ("fine", gates[API].message), WEB: ("fine", "not now")},
        )
    )
    assert (
        "       blocked: PodDisruptionBudget api can never allow a disruption\n  2. shop deployment/web"
        in out
    )


def test_yes_stopped_at_the_preflight_says_so_never_to_pass_yes() -> None:
    """`podgraft rollout --yes` whose preflight fails (the webhook down under Ignore): the plan is
    shown as what was not done, a budget that can never allow a disruption stays blocked."""
    stop = Preflight("stop", "the webhook did not inject log-shipper")
    gates = {API: Gate("never", "PodDisruptionBudget api can never allow a disruption")}
    outcomes = (*planned(PLAN, {API: stop, WEB: stop}, gates), *settled(PLAN))
    result = Report(PLAN, outcomes, dry_run=True, stopped="the preflight failed", acting=True)
    out = text(result)
    assert out.splitlines()[0] == (
        "nothing is restarted: the preflight failed before the first restart (the plan, in this order)"
    )
    assert "--yes" not in out
    assert out.splitlines()[-1].startswith("summary: 0 restarted, 1 already current, 2 blocked, 1 failed")
    assert as_data(result)["dryRun"] is False


def test_the_json_document() -> None:
    outcome = Outcome(
        _target(WEB),
        "restarted",
        "rolled out",
        "2026-12-03T12:00:00+00:00",
        "2026-12-03T12:00:01+00:00",
        "2026-12-03T12:00:09+00:00",
    )
    data = as_data(Report(PLAN, (outcome, *settled(PLAN)), dry_run=False, stopped=""))
    assert data["workloads"][0] == {
        "namespace": "shop",
        "kind": "Deployment",
        "name": "web",
        "result": "restarted",
        "reason": "rolled out",
        "pods": 2,
        "behind": [{"policy": "log-shipper", "state": "stale", "pods": 2}],
        "startedAt": "2026-12-03T12:00:00+00:00",
        "restartedAt": "2026-12-03T12:00:01+00:00",
        "finishedAt": "2026-12-03T12:00:09+00:00",
    }
    assert data["summary"] == {"restarted": 1, "current": 1, "blocked": 1, "notTouched": 1}
    assert data["notTouched"] == [
        {
            "namespace": "shop",
            "owner": "Job/nightly",
            "pods": 1,
            "behind": [{"policy": "log-shipper", "state": "missing", "pods": 1}],
        }
    ]
    assert data["stopped"] is None


def test_event_lines_and_the_bar() -> None:
    outcome = Outcome(_target(WEB), "restarted", "rolled out")
    assert event_line(Event("start", "log-shipper stale on 2 of 2 pods", _target(WEB)), "12:00:00") == (
        "12:00:00 shop deployment/web: starting (log-shipper stale on 2 of 2 pods)"
    )
    assert event_line(Event("finish", "rolled out", _target(WEB), outcome), "12:00:09") == (
        "12:00:09 shop deployment/web: restarted: rolled out"
    )
    assert (
        event_line(Event("wave", "wave 1 of 2: namespace shop"), "12:00:00")
        == "12:00:00 wave 1 of 2: namespace shop"
    )
    assert (
        progress_bar(1, 4, "shop deployment/web: Waiting")
        == "[#####---------------] 1/4 workloads  shop deployment/web: Waiting"
    )


@pytest.mark.parametrize(
    ("value", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("1.5s", 1.5)]
)
def test_durations_as_kubectl_writes_them(value: str, seconds: float) -> None:
    assert duration(value) == seconds


@pytest.mark.parametrize("value", ["", "ten", "5d", "-1s"])
def test_what_is_not_a_duration_is_refused(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        duration(value)


def test_explain_targets_as_kubectl_names_them() -> None:
    assert parse_target("pod/web-1") == ("Pod", "web-1")
    assert parse_target("deploy/web") == ("Deployment", "web")
    assert parse_target("sts/db") == ("StatefulSet", "db")
    with pytest.raises(argparse.ArgumentTypeError, match="expected KIND/NAME"):
        parse_target("service/web")
    with pytest.raises(argparse.ArgumentTypeError, match="expected KIND/NAME"):
        parse_target("web")


def test_rollout_flags_and_their_defaults() -> None:
    args = build_parser().parse_args(["rollout", "-n", "shop"])
    assert (args.yes, args.parallel, args.wave_size, args.timeout, args.ignore_pdb) == (
        False,
        1,
        1,
        600.0,
        False,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollout", "--yes", "--dry-run"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollout", "--parallel", "0"])


def test_explain_takes_a_target_or_a_file_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["explain", "pod/web", "-f", "x.yaml"])
    assert args.func(args) == 1
    assert capsys.readouterr().err == "error: podgraft explain takes one of KIND/NAME or -f FILE\n"


def test_explain_reads_what_kubectl_prints_and_skips_what_has_no_pod_template(tmp_path: Any) -> None:
    from app.cli.explain import _from_file
    from tests.unit.rollout_support import stored

    final = stored("deployment-rollout.yaml")["final"]
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [final["object"], final["pods"][0], final["replicasets"][0]],
    }
    listed["items"][0] = {**final["object"], "apiVersion": "apps/v1", "kind": "Deployment"}
    listed["items"][1] = {**final["pods"][0], "apiVersion": "v1", "kind": "Pod"}  # kubectl adds kinds
    listed["items"][2] = {**final["replicasets"][0], "apiVersion": "apps/v1", "kind": "ReplicaSet"}
    listed["items"].append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    path = tmp_path / "get.json"
    path.write_text(json.dumps(listed))
    subjects = _from_file(str(path), "default")
    namespace = final["object"]["metadata"]["namespace"]
    names = ("web", final["pods"][0]["metadata"]["name"], final["replicasets"][0]["metadata"]["name"])
    assert [s.title for s in subjects] == [
        f"{kind} {namespace}/{name} ({path})"
        for kind, name in zip(("Deployment", "Pod", "ReplicaSet"), names, strict=True)
    ]
    assert subjects[0].pod["metadata"]["generateName"] == "web-"
    assert not any(s.live for s in subjects)
