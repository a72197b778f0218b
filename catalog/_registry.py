"""A tiny generic name registry with "did you mean" errors (after lm-eval's ``Registry``)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists close matches and the valid names."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], aliases: dict[str, str] | None = None) -> None:
        valid = sorted(valid)
        lookup = {**{v: v for v in valid}, **(aliases or {})}  # short names (e.g. timm architectures) -> valid name
        close = list(dict.fromkeys(lookup[c] for c in difflib.get_close_matches(name, list(lookup), n=3, cutoff=0.5)))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(valid[:40]) + (", ..." if len(valid) > 40 else "")
        self.kind, self.name, self.valid, self.close = kind, name, valid, close
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {shown}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> item, filled once, queried with exact names or shell-style wildcards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
