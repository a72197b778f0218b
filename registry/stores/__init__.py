"""The read path's stores: one per kind of tracking URI, chosen by its scheme as MLflow chooses its own stores.

A store reads a registered model's versions and a typed watermark, and may answer a cold ``get_best`` without
reading every version; the index above it (:mod:`registry.index`) owns the cache: TTL, staleness, deltas, single
flight. Nothing here calls back up, and a read never writes.

- ``sqlite``, ``postgresql``, ``mysql``, ``mssql``: :class:`~registry.stores.sql.SqlStore`, MLflow's tables read
  directly (:mod:`registry.stores.mlflow_tables`);
- anything else (``http(s)``, ``databricks``, a file store): :class:`~registry.stores.api.ApiStore`, MLflow's public
  API through ``MlflowClient``; over HTTP its cold answers come from the LoggedModels (:mod:`registry.stores.logged`).

One accelerator per store kind: the SQL query over the cards (:mod:`registry.stores.pushdown`), the LoggedModel
search over HTTP. Where it is not sure, the index loads every version and answers; that is always right.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol

from registry.stores.mlflow_tables import dialect_of

if TYPE_CHECKING:
    from registry.constraints import Constraints
    from registry.selection import Candidate, Verdict
    from registry.stores.pushdown import Settled
    from registry.stores.versions import Rows


class Store(Protocol):
    kind: str
    answers_cold: bool  # best() can answer without a full read

    def watermark(self, model_name: str) -> Hashable:
        """What changes whenever anything a delta would read changes; None: no such registered model."""

    def load(self, model_name: str, mark: Hashable = None) -> tuple[Rows, dict[str, str]]:
        """Every version of the model and its aliases (``mark``: the watermark just read, which may hold them)."""

    def delta(self, model_name: str, old: Rows, old_mark: Hashable, mark: Hashable) -> tuple[set[int], Rows] | None:
        """The versions changed since ``old`` (read under ``old_mark``) and what they are now; None: reload."""

    def aliases_of(self, mark: Hashable) -> dict[str, str]:
        """The aliases the watermark read."""

    def best(self, model_name: str, k: Constraints) -> Settled[tuple[Candidate, Verdict]] | None:
        """The best feasible candidate (its artifact unchecked), ``Settled(None)``: none, for certain; None: unsure."""


def store_for(uri: str, client: Callable[[], Any]) -> Store:
    """The store for a tracking URI, by its scheme; ``client`` gives the ``MlflowClient`` (made on first use)."""
    from registry.stores.api import ApiStore
    from registry.stores.sql import SqlStore

    if dialect_of(uri) is not None:
        sql = SqlStore(uri)
        if sql.reads_fast:
            return sql
    return ApiStore(uri, client)
