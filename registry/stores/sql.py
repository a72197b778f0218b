"""The store behind a SQL tracking URI (SQLite, PostgreSQL, MySQL): MLflow's tables read directly, never written.

Reads go through :mod:`registry.stores.mlflow_tables` (the schema they rely on) on one engine per store and process;
a cold answer is computed in the store (:mod:`registry.stores.pushdown`, SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from registry.constraints import Constraints
from registry.hosts import on_host_point, runner_constraints
from registry.selection import Candidate, Verdict
from registry.stores import mlflow_tables as mt
from registry.stores import pushdown
from registry.stores.versions import MAX_DELTA, Rows


class SqlStore:
    """A SQL tracking store's versions, watermark and cold answers (see :class:`registry.stores.Store`)."""

    kind = "sql"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dialect = mt.dialect_of(uri) or ""
        self.answers_cold = self.dialect in pushdown.DIALECTS
        self.reads_fast = self.dialect in mt.READABLE  # else the caller reads through MLflow's public API

    @property
    def engine(self) -> Any:
        return mt.shared_engine(self.uri)

    def watermark(self, model_name: str) -> Hashable:
        with self.engine.connect() as conn:
            return mt.watermark(conn, model_name)

    def load(self, model_name: str, mark: Hashable = None) -> tuple[Rows, dict[str, str]]:
        with self.engine.connect() as conn:
            return mt.read_rows(conn, self.dialect, model_name, None), mt.aliases(conn, model_name)

    def delta(self, model_name: str, old: Rows, old_mark: Hashable, mark: Hashable) -> tuple[set[int], Rows] | None:
        """The versions changed since ``old`` and what they are now; None when a full reload is the better move."""
        with self.engine.connect() as conn:
            changed = mt.changed(conn, model_name, old)
            if len(changed) > MAX_DELTA:
                return None
            return changed, (mt.read_rows(conn, self.dialect, model_name, sorted(changed)) if changed else Rows({}))

    @staticmethod
    def aliases_of(mark: Hashable) -> dict[str, str]:
        """The aliases the watermark read (its last field)."""
        return {a: str(v) for a, v in mark[-1]} if isinstance(mark, tuple) else {}

    def best(self, model_name: str, k: Constraints) -> pushdown.Settled[tuple[Candidate, Verdict]] | None:
        """A cold answer computed in the store: ``Settled`` (its value None: nothing feasible), or None: not sure.

        A host target is one query over its runners' points, its machine found there and checked by the index's rule.
        """
        with self.engine.connect() as conn:
            if not k.on_host:
                return pushdown.settle(conn, self.dialect, model_name, k)
            runners = runner_constraints(k, k.host)
            return pushdown.settle(conn, self.dialect, model_name, k, runners, lambda c: on_host_point(c, k, runners))
