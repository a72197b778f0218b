"""A tiny generic name table with "did you mean" errors (after lm-eval's ``Registry``).

Named ``NameTable``, not ``Registry``: ``registry.Registry`` is the MLflow model registry's facade.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


LIST_UP_TO = 12  # longer lists are named in full only when no close match helps


class UnknownNameError(KeyError):
    """A name that is not registered; the message names the close matches and what is valid.

    Every valid name when there are few or no close match helps; else how many there are and ``listing`` (where to
    see them all), so one typo does not print the whole catalog.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        valid: Iterable[str],
        aliases: dict[str, str] | None = None,
        listing: str = "",
    ) -> None:
        valid = sorted(valid)
        lookup = {**{v: v for v in valid}, **(aliases or {})}  # short names (e.g. timm architectures) -> valid name
        close = list(dict.fromkeys(lookup[c] for c in difflib.get_close_matches(name, list(lookup), n=3, cutoff=0.5)))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if close and len(valid) > LIST_UP_TO:
            shown = f"{len(valid)} names" + (f" ({listing})" if listing else "")
        else:
            shown = ", ".join(valid[:40]) + (", ..." if len(valid) > 40 else "")
        self.kind, self.name, self.valid, self.close = kind, name, valid, close
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {shown}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class NameTable(Generic[T]):
    """Name -> item, filled once, queried with exact names or shell-style wildcards."""

    def __init__(self, kind: str, listing: str = "") -> None:
        self.kind, self.listing = kind, listing  # listing: where a person sees every name (a command)
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
            raise UnknownNameError(self.kind, name, self._items, listing=self.listing) from None

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
