"""Typed errors under one base; each message says what would have been valid."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from registry.selection import Verdict


class RegistryError(Exception):
    """Base of every error raised by ``registry``."""


class InvalidNameError(RegistryError, ValueError):
    """A dataset, team or model name that is not safe to use in paths or filter strings."""


class NothingMeasuredError(RegistryError):
    """The store holds nothing yet: its local SQLite file does not exist (a read does not create it)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class NoCandidatesError(RegistryError):
    """Nothing measured for this dataset and runner yet."""


class NoFeasibleModelError(RegistryError):
    """No measured model satisfies every constraint; ``nearest`` says which constraint each one failed, by how much."""

    def __init__(self, message: str, nearest: list[Verdict]) -> None:
        super().__init__(message)
        self.nearest = nearest


class InvalidTeamError(RegistryError, ValueError):
    """A team file that does not validate; the message names the file, the key and what would have been valid.

    ``path`` is the file (None for an error about several files, which lists each of them).
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnknownTeamError(RegistryError, KeyError):
    """No team of that name; the message lists the close matches and every known team."""

    def __init__(self, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown team {name!r}.{hint} Known teams: {', '.join(known) or '(none)'}")
        self.name, self.known = name, known

    def __str__(self) -> str:
        return str(self.args[0])


class NoChampionError(RegistryError):
    """The team has no champion yet (no promotion ran, or its version was deleted); says how to get one."""


class PromotionLockedError(RegistryError):
    """Another promotion for the same team holds the lock."""
