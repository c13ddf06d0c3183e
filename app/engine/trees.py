"""The marks of a compiled policy tree (`render.compile_tree`): a map or a list with a template
somewhere below it. Template-free subtrees stay plain dicts and lists, which rendering returns as
they are (shared, never copied or mutated).

Subclasses of dict and list, in a module of their own that is never compiled: mypyc does not
compile subclasses of builtins (setup.py).
"""

from __future__ import annotations

from typing import Any


class Dynamic(dict[str, Any]):
    """A compiled mapping with a template somewhere below it; `templated`: the keys of those items
    (rendering copies the map and renders only them)."""

    def __init__(self, items: dict[str, Any], templated: tuple[str, ...]) -> None:
        super().__init__(items)
        self.templated = templated


class DynamicList(list[Any]):
    """A compiled list with a template somewhere below it; `templated`: the indexes of those items."""

    def __init__(self, items: list[Any], templated: tuple[int, ...]) -> None:
        super().__init__(items)
        self.templated = templated
