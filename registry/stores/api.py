"""The store behind any other tracking URI (an HTTP tracking server): MLflow's public API (``MlflowClient``) only.

Over HTTP that is MLflow's REST API, and no database is in reach. It also reads a SQL store whose tables
:mod:`registry.stores.mlflow_tables` does not know.

A watermark in two REST calls made at once, only the first waited for (nothing else read while it holds):

- ``search_model_versions("name = ...", order_by last_updated_timestamp DESC, max_results=1)``: the newest version
  update (a version created, its stage or status moved), read at this check;
- ``search_registered_models("name = ...")``: the registered model's ``last_updated_timestamp`` (MLflow moves it on
  every version created or deleted), its aliases and tags. The server computes the model's latest versions for it, a
  window over every version: about 80 ms at 10,000 versions on a SQLite-backed server (``docs/BENCHMARKS.md``), more
  than a check may cost. So it is waited for only at the model's first check and at a full load; otherwise each check
  uses the one read at the previous check and starts the next. A new version is seen at the next check; an alias
  moved, a deletion or ``add-cards`` at the one after (within two TTLs). Not ``get_registered_model``: it builds every
  version of the model (O(versions)).

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

- a deleted version leaves every search and moves only the registered model's timestamp. When that timestamp moved
  and is newer than every live version's update (:func:`unexplained`), the newest event was a deletion (or an edit
  of the registered model itself): the index reloads in full. A deletion followed by a newer registration before
  the next check is not seen that way: the answer's own version is asked for before it is answered
  (``Registry.artifact_ok`` resolves every remote artifact through the registry, which refuses a deleted version),
  and ``max_age_s`` reloads;
- a tag written on an existing version moves no timestamp: ``cnnselect add-cards`` marks the registered model
  (``names.TAG_CARDS_REWRITTEN``, in the mark: a full reload), anything else is seen at the next full reload
  (``max_age_s``), as on every store.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
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
class Registered:
    """What ``search_registered_models`` says of the model."""

    updated: int  # its last_updated_timestamp
    aliases: tuple[tuple[str, str], ...]
    cards_rewritten: str  # names.TAG_CARDS_REWRITTEN: cards written on existing versions (add-cards)


@dataclass(frozen=True)
class Mark:
    """What a check reads; equal marks: nothing a delta would read has changed."""

    newest: tuple[int, int]  # (last_updated_timestamp, version) of the newest version update, read at this check
    registered: Registered  # read at the previous check (at this one for the model's first)


def _by_name(model_name: str) -> str:
    return f"name = '{model_name}'"  # names.registered_model_name validated it: no quote inside


def registered(client: Any, model_name: str) -> Registered | None:
    """The registered model as ``search_registered_models`` returns it; None when there is no such model."""
    found = client.search_registered_models(filter_string=_by_name(model_name), max_results=1)
    if not found:
        return None
    rm = found[0]
    aliases = tuple(sorted((str(a), str(v)) for a, v in (rm.aliases or {}).items()))
    return Registered(int(rm.last_updated_timestamp or 0), aliases, (rm.tags or {}).get(names.TAG_CARDS_REWRITTEN, ""))


def newest_update(client: Any, model_name: str) -> tuple[int, int]:
    """(last_updated_timestamp, version) of the model's newest version update; (0, 0) without versions."""
    page = client.search_model_versions(_by_name(model_name), max_results=1, order_by=["last_updated_timestamp DESC"])
    return (int(page[0].last_updated_timestamp or 0), int(page[0].version)) if page else (0, 0)


def _pool() -> ThreadPoolExecutor:
    """One per process (a forked worker gets its own: its parent's threads are not there), threads started on use."""
    return _pool_of(os.getpid())


@functools.cache
def _pool_of(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"cnnselect-registered-{pid}")


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


def unexplained(old: Mark, new: Mark) -> bool:
    """The registered model moved, and after every live version's update: a version was deleted (or the model edited).

    Only a move since ``old`` counts: a deletion the index has reloaded for stays the newest event until the next one.
    """
    return new.registered.updated != old.registered.updated and new.registered.updated > new.newest[0]


class ApiStore:
    """A store read through ``MlflowClient`` (see :class:`registry.stores.Store`); cold answers over HTTP only."""

    kind = "api"

    def __init__(self, uri: str, client: Callable[[], Any]) -> None:
        self.uri, self._client = uri, client
        self.answers_cold = uri.startswith(("http://", "https://"))  # elsewhere a full read is as cheap
        self._pid, self._lock = os.getpid(), threading.Lock()
        self._reading: dict[str, Future[Registered | None]] = {}  # the registered-model read in flight, per model
        self._seen: dict[str, Registered | None] = {}  # the last one read

    def watermark(self, model_name: str) -> Hashable:
        """The newest version update, read now, and the registered model as last read (a new read started)."""
        client = self._client()
        reading = self._read_registered(client, model_name)
        newest = newest_update(client, model_name)
        with self._lock:
            seen = self._seen.get(model_name)
        if seen is None:  # the model's first check, or it did not exist at the last: wait for this read
            seen = reading.result()
        return None if seen is None else Mark(newest, seen)

    def caught_up(self, model_name: str) -> None:
        """Wait for the registered-model read in flight (the next check then uses it)."""
        self._forked()
        with self._lock:
            reading = self._reading.get(model_name)
        if reading is not None:
            reading.result()

    def _forked(self) -> None:
        if self._pid != os.getpid():  # a forked worker: its parent's reads in flight never finish here
            self._pid, self._lock, self._reading = os.getpid(), threading.Lock(), {}

    def _read_registered(self, client: Any, model_name: str) -> Future[Registered | None]:
        self._forked()
        with self._lock:
            reading = self._reading.get(model_name)
            if reading is None or reading.done():  # one in flight per model, however short the TTL
                reading = self._reading[model_name] = _pool().submit(self._registered_now, client, model_name)
        return reading

    def _registered_now(self, client: Any, model_name: str) -> Registered | None:
        rm = registered(client, model_name)
        with self._lock:
            self._seen[model_name] = rm
        return rm

    def load(self, model_name: str, mark: Hashable = None) -> tuple[Rows, dict[str, str]]:
        """Every version in one request, and the aliases read now (a full load never answers with older ones)."""
        client = self._client()
        rm = self._registered_now(client, model_name)
        rows = rows_of(model_name, every_version(client, model_name))
        return rows, dict(rm.aliases) if rm else {}

    @staticmethod
    def aliases_of(mark: Hashable) -> dict[str, str]:
        return dict(mark.registered.aliases) if isinstance(mark, Mark) else {}

    def delta(self, model_name: str, old: Rows, old_mark: Hashable, mark: Hashable) -> tuple[set[int], Rows] | None:
        """Only the versions updated since ``old``'s newest update read again; None: reload in full."""
        if not isinstance(mark, Mark) or not isinstance(old_mark, Mark) or unexplained(old_mark, mark):
            return None  # a version was deleted: which one, no REST call says
        if mark.registered.cards_rewritten != old_mark.registered.cards_rewritten:
            return None  # cards rewritten on existing versions: no timestamp says which
        if mark.newest == old_mark.newest:
            return set(), Rows({})  # no version updated: the aliases, or the registered model read catching up
        versions = changed(self._client(), model_name, old.max_updated, MAX_DELTA)
        if versions is None:
            return None
        return {int(mv.version) for mv in versions}, rows_of(model_name, versions)

    def best(self, model_name: str, k: Constraints) -> Settled[tuple[Candidate, Verdict]] | None:
        """A runner target's best from the LoggedModels (:mod:`registry.stores.logged`); None: not sure."""
        from registry.stores import logged

        return logged.settle(self._client(), model_name, k)
