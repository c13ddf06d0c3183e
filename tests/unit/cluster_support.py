"""Shared by the test_cluster_* modules: a valid policy document template and a scripted list/watch API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.cluster.watch import ListWatch

GOOD = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: {name}}}
spec:
  env: [{{name: EDITION, value: "{edition}"}}]
"""


class FakeApi:
    """Scripted list and watch calls; records the resourceVersions the watches started from."""

    def __init__(self, watches: list[list[tuple[str, str | None, str] | Exception] | Exception]) -> None:
        self.lists = 0
        self.watch_versions: list[str] = []
        self.watches = watches

    def lister(self) -> tuple[list[str], str]:
        self.lists += 1
        return [f"listed-{self.lists}"], f"{self.lists * 100}"

    def watcher(self, version: str) -> Iterator[tuple[str, str | None, str]]:
        self.watch_versions.append(version)
        if not self.watches:
            raise RuntimeError("script exhausted")
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for item in step:
            if isinstance(item, Exception):
                raise item
            yield item

    def list_watch(self, sink: Any) -> ListWatch[Any]:
        return ListWatch("fake", lister=self.lister, watcher=self.watcher, sink=sink)
