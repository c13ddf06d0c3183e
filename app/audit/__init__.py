"""The audit: which pods run the current version of the policies they ask for or match (pure).

- `classify`: one pod, per policy: current, stale, missing, refused or orphaned (the webhook's engine);
- `owners`: the workload behind a pod (through ReplicaSets and Jobs);
- `report`: `podgraft audit`'s table, JSON/YAML, summary, exit code and restart plan;
- `census`: the server's running audit, small records and counts (fed by `app.cluster.census`).
"""
