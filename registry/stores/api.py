"""The store behind any other tracking URI (an HTTP tracking server): MLflow's public API (``MlflowClient``) only.

Over HTTP that is MLflow's REST API, and no database is in reach. It also reads a SQL store whose tables
:mod:`registry.stores.mlflow_tables` does not know.

A watermark in one REST call, nothing else read while it holds: ``search_registered_models("name = ...")``, the
registered model's ``last_updated_timestamp``, its aliases and its tags. MLflow moves that timestamp whenever a version
is created, deleted or moves stage (``SqlAlchemyStore``, ``FileStore``); not ``get_registered_model``: to find the
latest versions the server builds every version of the model (O(versions)), where the search asks for them in one
grouped query.

A change reads only what changed (:func:`changed`): the versions in ``last_updated_timestamp`` order, from the newest
update down to the newest one the index saw (that millisecond read again: a version read twice is harmless), in pages
that grow from a few. A full read (:func:`every_version`) is one request ordered by version number, as large as the
server allows (200,000), so that no page boundary can skip a version while another writer deletes one.

A cold ``get_best`` is answered from the LoggedModels (:mod:`registry.stores.logged`): ``search_logged_models``
filters and orders them by a metric on the server, and each version's figures are its card's (``names.TAG_CARD``),
which ``log_evaluation`` writes from its LoggedModel's tags and metrics; the best LoggedModels' versions are read and
judged from their cards, each checked against its LoggedModel. That is this store's one accelerator: where it is
not sure (a weighted objective, a host target, a LoggedModel with several versions, cards written later), the index
loads every version in one request (:func:`every_version`) and answers.

What the REST API cannot tell, and what covers it:

- a deleted version leaves every search and moves only the registered model's timestamp. When the delta finds no live
  version as new as that timestamp (:func:`unexplained`), the newest event was a deletion (or an edit of the
  registered model itself): the index reloads in full. A deletion followed by a newer registration before the next
  check is not seen that way: the answer's own version is asked for before it is answered (``Registry.artifact_ok``
  resolves every remote artifact through the registry, which refuses a deleted version), and ``max_age_s`` reloads;
- a tag written on an existing version moves no timestamp: ``cnnselect add-cards`` marks the registered model
  (``names.TAG_CARDS_REWRITTEN``, in the mark: a full reload), anything else is seen at the next full reload
  (``max_age_s``), as on every store. So is a version's status moved on its own (a registry that registers
  asynchronously; MLflow's own stores register a version READY).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict
from registry.stores.pushdown import Settled
from registry.stores.versions import MAX_DELTA, Rows, rows_of

log = logging.getLogger(__name__)

LOAD_PAGE = 200_000  # the most ``search_model_versions`` returns per request (mlflow.server.handlers)
FIRST_PAGE = 16  # a change is a few versions: the first page of a delta holds them, one request


@dataclass(frozen=True)
class Mark:
    """What the watermark call reads; equal marks: nothing a delta would read has changed."""

    updated: int  # the registered model's last_updated_timestamp
    aliases: tuple[tuple[str, str], ...]
    cards_rewritten: str  # names.TAG_CARDS_REWRITTEN: cards written on existing versions (add-cards)


def _by_name(model_name: str) -> str:
    return f"name = '{model_name}'"  # names.registered_model_name validated it: no quote inside


def watermark(client: Any, model_name: str) -> Mark | None:
    """The model's :class:`Mark` in one REST call; None when there is no such registered model."""
    found = client.search_registered_models(filter_string=_by_name(model_name), max_results=1)
    if not found:
        return None
    rm = found[0]
    aliases = tuple(sorted((str(a), str(v)) for a, v in (rm.aliases or {}).items()))
    return Mark(int(rm.last_updated_timestamp or 0), aliases, (rm.tags or {}).get(names.TAG_CARDS_REWRITTEN, ""))


def every_version(client: Any, model_name: str) -> list[Any]:
    """Every live version of the model with its tags: one request, in version order (paged only beyond 200,000)."""
    out, token = [], None
    while True:
        page = client.search_model_versions(
            _by_name(model_name), max_results=LOAD_PAGE, order_by=["version_number ASC"], page_token=token
        )
        out += page
        token = page.token
        if not token:
            return out


def changed(client: Any, model_name: str, since: int, most: int) -> list[Any] | None:
    """The live versions updated at or after ``since`` (ms), newest first; None when more than ``most`` did."""
    size = FIRST_PAGE
    while True:
        page = client.search_model_versions(
            _by_name(model_name), max_results=size, order_by=["last_updated_timestamp DESC"]
        )
        fresh = [mv for mv in page if int(mv.last_updated_timestamp or 0) >= since]
        if len(fresh) < len(page) or not page.token:
            return fresh if len(fresh) <= most else None
        if size > most:
            return None
        size = min(size * 8, most + 1)  # all of this page changed: a larger one from the top (no page token kept)


def unexplained(mark: Mark, versions: list[Any]) -> bool:
    """The registered model moved after every version updated since: a version was deleted (or the model edited)."""
    return mark.updated > max((int(mv.last_updated_timestamp or 0) for mv in versions), default=0)


class ApiStore:
    """A store read through ``MlflowClient`` (see :class:`registry.stores.Store`); cold answers over HTTP only."""

    kind = "api"

    def __init__(self, uri: str, client: Callable[[], Any]) -> None:
        self.uri, self._client = uri, client
        self.answers_cold = uri.startswith(("http://", "https://"))  # elsewhere a full read is as cheap

    def watermark(self, model_name: str) -> Hashable:
        return watermark(self._client(), model_name)  # one REST call

    def load(self, model_name: str, mark: Hashable = None) -> tuple[Rows, dict[str, str]]:
        """Every version in one request; the aliases those the watermark just read (else read with it)."""
        client = self._client()
        rows = rows_of(model_name, every_version(client, model_name))
        if not isinstance(mark, Mark):
            mark = watermark(client, model_name)
        return rows, self.aliases_of(mark)

    @staticmethod
    def aliases_of(mark: Hashable) -> dict[str, str]:
        return dict(mark.aliases) if isinstance(mark, Mark) else {}

    def delta(self, model_name: str, old: Rows, old_mark: Hashable, mark: Hashable) -> tuple[set[int], Rows] | None:
        """Only the versions updated since ``old``'s newest update read again; None: reload in full."""
        if (
            not isinstance(mark, Mark)
            or not isinstance(old_mark, Mark)
            or mark.cards_rewritten != old_mark.cards_rewritten
        ):
            return None  # cards rewritten on existing versions: no timestamp says which
        if mark.updated == old_mark.updated:
            return set(), Rows({})  # only the aliases moved
        versions = changed(self._client(), model_name, old.max_updated, MAX_DELTA)
        if versions is None or unexplained(mark, versions):
            return None  # too many changed, or a version was deleted: which one, no REST call says
        return {int(mv.version) for mv in versions}, rows_of(model_name, versions)

    def best(self, model_name: str, k: Constraints) -> Settled[tuple[Candidate, Verdict]] | None:
        """A runner target's best from the LoggedModels (:mod:`registry.stores.logged`); None: not sure."""
        from registry.stores import logged

        return logged.settle(self._client(), model_name, k)
