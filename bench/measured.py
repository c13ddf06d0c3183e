"""What bench/instructions.py counts: the inputs (built, and warmed up, outside the counted region)
and one function per figure, each run once inside `operator.call` (the region callgrind counts).

Also usable without valgrind, to time the same functions or profile them:
`.venv/bin/python bench/measured.py` prints each one's CPU time per pod.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import operator
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
from scenarios import make_pod, make_review, write_policies

from app import logs
from app.admission.decide import decide
from app.admission.review import AdmissionRequest, parse_review
from app.server import Handler, create_app
from app.settings import Settings
from app.sources.directory import read_directory
from app.sources.store import PolicyStore

Counted = Callable[[], object]
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def reviews(count: int, offset: int = 0) -> list[bytes]:
    """`count` distinct realistic reviews (as bench/runner.py makes them for vegeta: the pod template
    hash, so generateName and labels, differs), with deterministic uids."""
    template = make_review(make_pod("realistic"))
    bodies = []
    for n in range(offset, offset + count):
        body = template.replace(b"7d9f8c6b5", b"h%08d" % n)
        uids = iter((uuid.UUID(int=2 * n + 1), uuid.UUID(int=2 * n + 2)))
        bodies.append(_UUID.sub(lambda _match: str(next(uids)).encode(), body))  # noqa: B023 (used at once)
    return bodies


def injected(body: bytes, patch: list[dict[str, Any]]) -> bytes:
    """The review of a pod as Podgraft's patch left it, sent again (a reinvocation)."""
    review = orjson.loads(body)
    review["request"]["object"] = jsonpatch.apply_patch(review["request"]["object"], patch)
    return orjson.dumps(review)


class Bench:
    """The server's pieces as `podgraft serve` builds them, with the benchmark's two policies."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="podgraft-measured-")
        policies = Path(self.tmp.name) / "policies"
        write_policies(policies, 2)
        self.settings = Settings(policy_dir=policies)
        store = PolicyStore(max_bytes=self.settings.max_policy_bytes)
        store.replace_all(read_directory(policies))
        self.app = create_app(self.settings, store=store)
        self.runtime = self.app.state.runtime
        self.handler: Handler = self.app.state.webhooks["/mutate"]
        self.log_sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        logs.configure(self.settings.log_level)
        logging.getLogger().handlers[0].setStream(self.log_sink)  # type: ignore[attr-defined]
        self.loop = _event_loop()

    def decide(self, request: AdmissionRequest) -> Any:
        rt = self.runtime
        return decide(request, policies=rt.store.current(), config=rt.engine, namespace_labels=None)

    def post(self, body: bytes) -> bytes:
        return self.loop.run_until_complete(self._post_all([body]))[0]

    async def _post_all(self, bodies: list[bytes]) -> list[bytes]:
        return [await self._post(body) for body in bodies]

    async def _post(self, body: bytes) -> bytes:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/mutate",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> dict[str, Any]:
            return message

        sent: list[bytes] = []

        async def send(event: MutableMapping[str, Any]) -> None:
            if event["type"] == "http.response.body":
                sent.append(event["body"])

        await self.handler(scope, receive, send)
        return sent[0]

    def post_all(self, bodies: list[bytes]) -> list[bytes]:
        return self.loop.run_until_complete(self._post_all(bodies))


def _event_loop() -> asyncio.AbstractEventLoop:
    import uvloop  # what `podgraft serve` runs on

    return uvloop.new_event_loop()


def settle() -> None:
    """Before each counted run: a full collection, then the heap so far frozen (as the server
    freezes its start-up heap), so that the collector sees only what the run allocates."""
    gc.collect()
    gc.freeze()


def measurements(pods: int, *, stages: bool = False) -> list[tuple[str, Counted]]:
    """(name, function) for each figure, every input built and every path warmed up: the inputs are
    `pods` distinct reviews, after a warm-up on as many others."""
    bench = Bench()
    warm = reviews(pods, offset=10_000)
    bodies = reviews(pods)
    parsed = [parse_review(body) for body in bodies]
    first = [bench.decide(request) for request in parsed]
    again = [
        parse_review(injected(body, decision.result.patch))
        for body, decision in zip(bodies, first, strict=True)
    ]
    for body in warm:  # every path once, so that the interpreter's caches are warm
        request = parse_review(body)
        decision = bench.decide(request)
        bench.decide(parse_review(injected(body, decision.result.patch)))
    bench.post_all(warm)
    fresh = reviews(pods, offset=20_000)  # pods the decision cache has not seen
    found: list[tuple[str, Counted]] = [
        ("decide", lambda: [bench.decide(request) for request in parsed]),
        ("decide_injected", lambda: [bench.decide(request) for request in again]),
        ("request", lambda: bench.post_all(fresh)),
    ]
    if stages:
        from stages import stage_measurements

        found += stage_measurements(bench, pods)
    return found


def main() -> None:
    """Time each measurement (CPU time per pod), without valgrind."""
    pods = 200
    for name, counted in measurements(pods, stages="--stages" in sys.argv):
        settle()
        started = time.process_time()
        operator.call(counted)
        elapsed = time.process_time() - started
        sys.stdout.write(f"{name:28s} {elapsed / pods * 1e6:8.1f} us per pod\n")


if __name__ == "__main__":
    main()
