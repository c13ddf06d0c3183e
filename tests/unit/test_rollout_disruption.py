"""app/rollout/disruption.py: the PodDisruptionBudget gate, on budgets whose status the real
disruption controller computed for the pods it counted."""

from __future__ import annotations

from typing import Any

import pytest

from app.rollout.disruption import budget_verdict, disruption_gate, selects
from tests.unit.rollout_support import stored


def _budgets() -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: b for b in stored("budgets.yaml")["budgets"]}


@pytest.mark.parametrize(
    ("app", "verdict", "message"),
    [
        pytest.param("web", "allowed", "PodDisruptionBudget web allows 1 disruption", id="allows-one"),
        pytest.param(
            "solo",
            "never",
            "PodDisruptionBudget solo can never allow a disruption: it wants 1 of 1 pods healthy "
            "(minAvailable 1); a restart would take one down",
            id="one-replica-min-available-1",
        ),
        pytest.param(
            "db",
            "never",
            "PodDisruptionBudget db can never allow a disruption: it wants 2 of 2 pods healthy "
            "(maxUnavailable 0); a restart would take one down",
            id="max-unavailable-0",
        ),
        pytest.param(
            "unready",
            "wait",
            "PodDisruptionBudget unready allows no disruption now: 0 of 2 pods healthy, 1 needed",
            id="pods-not-ready-now",
        ),
    ],
)
def test_each_budget_state_as_the_disruption_controller_wrote_it(
    app: str, verdict: str, message: str
) -> None:
    gate = disruption_gate(stored("budgets.yaml")["budgets"], {"app": app})
    assert (gate.verdict, gate.message) == (verdict, message)


def test_pods_no_budget_selects_may_go() -> None:
    gate = disruption_gate(stored("budgets.yaml")["budgets"], {"app": "agent"})
    assert (gate.verdict, gate.message) == ("allowed", "")


def test_every_captured_pod_is_selected_by_its_own_budget_only() -> None:
    budgets = _budgets()
    for pod in stored("budgets.yaml")["pods"]:
        labels = pod["metadata"]["labels"]
        chosen = [name for name, budget in budgets.items() if selects(budget, labels)]
        assert chosen == ([labels["app"]] if labels["app"] in budgets else []), pod["metadata"]["name"]


def test_the_strictest_of_two_budgets_decides() -> None:
    budgets = _budgets()
    second = {**budgets["web"], "metadata": {**budgets["web"]["metadata"], "name": "web-strict"}}
    second["status"] = budgets["solo"]["status"]
    assert disruption_gate([budgets["web"], second], {"app": "web"}).verdict == "never"


def test_a_budget_whose_status_is_not_computed_for_its_generation_waits() -> None:
    budget = _budgets()["web"]
    budget["metadata"]["generation"] = budget["status"]["observedGeneration"] + 1
    assert budget_verdict(budget).verdict == "wait"
    assert budget_verdict({**budget, "status": {}}).message.endswith("its status is not computed yet")


def test_an_empty_selector_selects_every_pod_and_a_missing_one_none() -> None:
    budget = _budgets()["web"]
    assert selects({**budget, "spec": {**budget["spec"], "selector": {}}}, {"app": "anything"})
    assert not selects({**budget, "spec": {"minAvailable": 1}}, {"app": "web"})
