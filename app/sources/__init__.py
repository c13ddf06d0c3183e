"""Where policies come from and where the current set is held; above the engine, which compiles them.

- `documents`: one source text (a file, one ConfigMap key) -> safe YAML -> validated, compiled policies;
- `store`: the `PolicyStore` that swaps the immutable `PolicySet` whole, keeping each key's last good
  version when a new text is refused;
- `directory`: local mode, a watched directory of files (cluster mode's ConfigMaps are `app.cluster`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.sources.store import PolicyStore


class PolicySource(Protocol):
    """Anything that loads policies into a store, then keeps them current until cancelled."""

    async def run(self, store: PolicyStore) -> None: ...


class NamespaceLookup(Protocol):
    """Labels of a namespace, or None when unknown (then the webhook configuration is trusted)."""

    def labels(self, name: str) -> Mapping[str, str] | None: ...
