"""What a version's tags make of it, whatever store they were read from: a candidate, or none, and the read's marks.

A candidate is built from a handful of tags (``names.INDEX_TAGS``): its figures, operating point, fingerprint, host
and family come from its card (``names.TAG_CARD``) alone. A version whose card is missing or unreadable (registered
before this card format, or edited by hand) is no candidate, and a warning says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from registry import names
from registry.selection import Candidate

log = logging.getLogger(__name__)
MAX_DELTA = 2_000  # more changed versions than this: a full reload is as cheap


@dataclass
class Rows:
    """What one read of a model's versions found: the usable candidates by version and the store's marks then.

    A delta refresh starts from them: which versions carry their card, which wait for one, which are deleted.
    """

    by_version: dict[int, Candidate]
    done: set[int] = field(default_factory=set)  # versions carrying their card (fully logged), usable or not
    pending: set[int] = field(default_factory=set)  # live versions without one yet: a card written later changes them
    deleted: set[int] = field(default_factory=set)
    max_updated: int = 0  # newest last_updated_time seen
    top: int = 0  # highest version number seen
    uncarded: list[str] = field(default_factory=list)  # usable versions without a readable card (warned about)

    @property
    def low(self) -> int:
        return min(self.pending, default=self.top + 1)

    def add(
        self,
        model_name: str,
        version: int,
        tags: dict[str, Any],
        ready: bool,
        deleted: bool,
        updated: int,
        run_id: str,
        created_ms: int,
        artifact_uri: str,
    ) -> None:
        """One version as read: its marks, and its candidate where it is usable and its card reads."""
        self.max_updated, self.top = max(self.max_updated, int(updated or 0)), max(self.top, version)
        if tags.get(names.TAG_CARD):
            self.done.add(version)
        elif not deleted:
            self.pending.add(version)
        if deleted:
            self.deleted.add(version)
        if ready and not deleted and usable(tags):
            c = candidate_from_tags(model_name, str(version), run_id, created_ms, tags, artifact_uri)
            if c is None:
                self.uncarded.append(str(version))
            else:
                self.by_version[version] = c

    def merged(self, changed: set[int], fresh: Rows) -> Rows:
        """These rows with the ``changed`` versions replaced by what ``fresh`` read of them (absent there: gone)."""
        by_version = {v: c for v, c in self.by_version.items() if v not in changed}
        by_version.update(fresh.by_version)
        return Rows(
            by_version,
            (self.done - changed) | fresh.done,
            (self.pending - changed) | fresh.pending,
            self.deleted | fresh.deleted,
            max(self.max_updated, fresh.max_updated),
            max(self.top, fresh.top),
        )

    def in_version_order(self) -> list[Candidate]:
        return [self.by_version[v] for v in sorted(self.by_version)]


def candidate_from_tags(
    model_name: str, version: str, run_id: str, created_ms: int, tags: dict[str, Any], artifact_uri: str = ""
) -> Candidate | None:
    """The candidate a version's tags describe, or None when its card is missing or unreadable."""
    card = names.read_card(tags.get(names.TAG_CARD))
    if card is None:
        return None
    return Candidate(
        model_name=model_name,
        version=str(version),
        run_id=tags.get(names.TAG_RUN_ID) or run_id or "",
        variant=tags.get(names.TAG_VARIANT, ""),
        evaluator_version=tags.get(names.TAG_EVALUATOR_VERSION, ""),
        created_ms=int(created_ms or 0),
        artifact_uri=artifact_uri or "",
        **{f.name: getattr(card, f.name) for f in fields(card)},  # every figure and the operating point: the card's
    )


def usable(tags: dict[str, Any]) -> bool:
    """Successfully evaluated: a candidate if its card reads (see :func:`candidate_from_tags`)."""
    return tags.get(names.TAG_STATUS) == names.STATUS_OK


def warn_uncarded(model_name: str, versions: list[str]) -> None:
    """Say which usable versions are no candidates for want of a readable card (a few named, all counted)."""
    named = ", ".join(f"v{v}" for v in versions[:5]) + (", ..." if len(versions) > 5 else "")
    log.warning(
        "%s: %d version(s) without a readable %s tag are not candidates (%s): registered before this card format or "
        "edited by hand; `cnnselect add-cards --dataset %s` writes each one from its run's metrics",
        model_name, len(versions), names.TAG_CARD, named, model_name.removeprefix("cnnselect-"),
    )  # fmt: skip


def rows_of(model_name: str, versions: list[Any]) -> Rows:
    """What ``mlflow_tables.read_rows`` makes of ``ModelVersion`` entities (a search hides deleted ones)."""
    rows = Rows({})
    for mv in versions:
        v, tags = int(mv.version), mv.tags or {}
        created, updated = mv.creation_timestamp, mv.last_updated_timestamp
        rows.add(model_name, v, tags, mv.status == "READY", False, updated, mv.run_id, created, mv.source or "")
    return rows
