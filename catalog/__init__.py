"""The CNN catalog: every variant of the selection guide with its published figures.

Importing ``catalog`` never imports torch or timm; the weights sources live in ``catalog.weights``.
"""

from __future__ import annotations

from catalog._nametable import NameTable, UnknownNameError
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
    "new_pretrained_tags",
]

_ENTRIES: NameTable[CatalogEntry] = NameTable("catalog entry")
for _entry in ENTRIES:
    _ENTRIES.add(_entry.name, _entry)


def get_entry(name: str) -> CatalogEntry:
    """The entry called ``name`` (``arch.tag``); a bare architecture name resolves to its single entry."""
    if name in _ENTRIES:
        return _ENTRIES.get(name)
    same_arch = [e for e in _ENTRIES if e.architecture == name]
    if len(same_arch) == 1:
        return same_arch[0]
    derived = _derived_entry(name)
    if derived is not None:
        return derived
    raise UnknownNameError(
        "catalog entry",
        name,
        _ENTRIES.names(),
        {e.architecture: e.name for e in _ENTRIES},
        listing="`cnnselect catalog list` shows them",
    )


def _derived_entry(name: str) -> CatalogEntry | None:
    """``arch.tag`` for a catalogued architecture and a pretrained tag the installed timm knows (a new tag)."""
    arch, _, tag = name.partition(".")
    base = next((e for e in _ENTRIES if e.architecture == arch), None)
    if base is None or not tag:
        return None
    import timm  # only for names outside the catalog

    if name not in timm.list_pretrained(f"{arch}.*"):
        return None
    cfg = timm.get_pretrained_cfg(name)
    size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else base.input_size
    return CatalogEntry(name, base.family, size, None, base.deployments, f"{base.description} (timm tag {tag})")


def new_pretrained_tags(architectures: set[str]) -> list[str]:
    """Pretrained tags the installed timm has for these architectures that the catalog does not list yet."""
    import timm

    known = set(_ENTRIES.names())
    return [n for a in sorted(architectures) for n in timm.list_pretrained(f"{a}.*") if n not in known]


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
