"""The CNN catalog: every variant of the selection guide with its published figures.

Importing ``catalog`` never imports torch or timm; the weights sources live in ``catalog.weights``.
"""

from __future__ import annotations

from catalog._registry import Registry, UnknownNameError
from catalog.entries import CatalogEntry, Deployment, Family, PublishedFigures
from catalog.families import ENTRIES
from catalog.profiles import PROFILES, Profile

__all__ = [
    "CatalogEntry",
    "Deployment",
    "Family",
    "Profile",
    "PublishedFigures",
    "UnknownNameError",
    "get_entry",
    "get_profile",
    "list_entries",
    "list_profiles",
]

_ENTRIES: Registry[CatalogEntry] = Registry("catalog entry")
for _entry in ENTRIES:
    _ENTRIES.add(_entry.name, _entry)


def get_entry(name: str) -> CatalogEntry:
    """The entry called ``name`` (``arch.tag``); a bare architecture name resolves to its single entry."""
    if name in _ENTRIES:
        return _ENTRIES.get(name)
    same_arch = [e for e in _ENTRIES if e.architecture == name]
    if len(same_arch) == 1:
        return same_arch[0]
    raise UnknownNameError("catalog entry", name, _ENTRIES.names(), {e.architecture: e.name for e in _ENTRIES})


def list_entries(
    pattern: str = "*", family: Family | str | None = None, deployment: Deployment | str | None = None
) -> list[CatalogEntry]:
    """Entries whose name matches the wildcard ``pattern``, optionally of one family or deployment target."""
    fam = Family(family) if family is not None else None
    dep = Deployment(deployment) if deployment is not None else None
    return [
        _ENTRIES.get(n)
        for n in _ENTRIES.names(pattern)
        if (fam is None or _ENTRIES.get(n).family is fam) and (dep is None or dep in _ENTRIES.get(n).deployments)
    ]


def get_profile(name: str) -> Profile:
    """A named profile (``demo``, ``smoke``, ``full``)."""
    return PROFILES.get(name)


def list_profiles() -> list[str]:
    return PROFILES.names()
