"""`podgraft rollout`, decided (pure): the audit's restart plan carried out safely.

- `plan`: the workloads to restart, current, blocked or left alone; their order and waves;
- `status`: `kubectl rollout status`'s rules, what stops a restart, the restart patch, new pods;
- `disruption`: the PodDisruptionBudget gate the controllers do not have;
- `runner`: one target at a time per namespace through a `RolloutApi`, stop conditions, Ctrl-C;
- `report`: the plan, the event lines, the summary, JSON and the exit code.
"""
