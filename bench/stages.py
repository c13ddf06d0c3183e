"""The stages of one admission of the realistic pod, each counted on its own (`instructions.py
--stages`): what the README's "Where a request's instructions go" table lists.

Each stage runs on inputs the stages before it produced outside the counted region, through the
same functions `/mutate` calls, so the stages add up to about the whole (the rest is the request
path's glue: the ASGI calls, the body read, the verdict).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from measured import Bench, reviews

from app.admission.responses import patched, review
from app.admission.review import parse_review
from app.engine.inputs import rendering_view
from app.engine.mutate import mutate_pod
from app.engine.patch import create_patch, without_managed_fields
from app.engine.presence import classic_helpers, plan_policy
from app.engine.select import select_policies
from app.engine.status import read_status

Counted = Callable[[], object]


def stage_measurements(bench: Bench, pods: int) -> list[tuple[str, Counted]]:
    rt = bench.runtime
    config, policies = rt.engine, rt.store.current()
    bodies = reviews(pods, offset=30_000)
    requests = [parse_review(body) for body in bodies]
    originals = [without_managed_fields(request.object or {}) for request in requests]
    selections = [
        select_policies(pod, namespace="shop", namespace_labels=None, policies=policies, config=config)
        for pod in originals
    ]
    shown = [rendering_view(pod, config.status_annotation) for pod in originals]
    rendered = [
        [(policy, policy.render(view, "shop")) for policy in selection.policies]
        for view, selection in zip(shown, selections, strict=True)
    ]
    mutated = [
        mutate_pod(pod, specs, config=config, claims={}, shown=view)[0]
        for pod, specs, view in zip(originals, rendered, shown, strict=True)
    ]
    patches = [create_patch(pod, copy) for pod, copy in zip(originals, mutated, strict=True)]
    decisions = [bench.decide(request) for request in requests]

    def select() -> object:
        return [
            select_policies(
                without_managed_fields(request.object or {}),
                namespace="shop",
                namespace_labels=None,
                policies=policies,
                config=config,
            )
            for request in requests
        ]

    def render() -> object:
        return [
            [
                (policy, policy.render(rendering_view(pod, config.status_annotation), "shop"))
                for policy in s.policies
            ]
            for pod, s in zip(originals, selections, strict=True)
        ]

    def plan() -> object:
        found = []
        for pod, specs in zip(originals, rendered, strict=True):
            helpers = classic_helpers(specs, config)
            found += [
                plan_policy(pod, policy, spec, config=config, helpers=helpers) for policy, spec in specs
            ]
        return found

    def mutate() -> object:
        return [
            mutate_pod(
                pod, specs, config=config, claims=read_status({}, config.status_annotation), shown=view
            )
            for pod, specs, view in zip(originals, rendered, shown, strict=True)
        ]

    def response() -> object:
        return [
            orjson.dumps(review(request.api_version, patched(request.uid, ops)))
            for request, ops in zip(requests, patches, strict=True)
        ]

    def record() -> object:  # what /mutate records of each admission: its metrics and log line
        for request, decision in zip(requests, decisions, strict=True):
            bench.handler._record(request, decision)
            rt.metrics.latency.observe(0.001)
        return None

    return [
        ("parse", lambda: [parse_review(body) for body in bodies]),
        ("cache key", lambda: [rt.cache._key(request, None) for request in requests]),
        ("select", select),
        ("render", render),
        ("plan (presence)", plan),
        ("mutate (plan, apply, status)", mutate),
        ("patch", lambda: [create_patch(p, m) for p, m in zip(originals, mutated, strict=True)]),
        ("response", response),
        ("metrics and log line", record),
    ]
