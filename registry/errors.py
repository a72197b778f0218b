"""Typed errors under one base; each message says what would have been valid."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.selection import Verdict


class RegistryError(Exception):
    """Base of every error raised by ``registry``."""


class InvalidNameError(RegistryError, ValueError):
    """A dataset, team or model name that is not safe to use in paths or filter strings."""


class NoCandidatesError(RegistryError):
    """Nothing measured for this dataset and runner yet."""


class NoFeasibleModelError(RegistryError):
    """No measured model satisfies every constraint; ``nearest`` says which constraint each one failed, by how much."""

    def __init__(self, message: str, nearest: list[Verdict]) -> None:
        super().__init__(message)
        self.nearest = nearest
