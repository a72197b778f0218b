"""An in-process index of candidates per registered model: answers from memory, refreshed by TTL plus a watermark.

Within ``ttl_s`` of the last check a read touches no database. After it, one cheap watermark query (the registered
model's last update, highest version, versions carrying their card, aliases) decides whether anything changed; if
so, only the versions that changed are read again (a *delta*: versions numbered above the highest seen, newly deleted
ones, those whose card appeared since, the last updated). No clock is compared across writers. ``max_age_s`` forces a
full reload regardless, which catches tag edits the watermark cannot see. A refresh never blocks a reader that has
an answer: past the TTL, the first reader starts one refresh in a background thread (single flight per model: one
that outlasts the TTL starts no second) and every reader gets the last snapshot at once, for up to ``stale_s`` past
the TTL; after that (or with ``stale_s`` 0) a reader waits for the refresh, so no answer is ever older than that.
SQL stores (SQLite, PostgreSQL, MySQL) are read with plain queries over MLflow's tables through one engine per store
and process; any other store (an HTTP tracking server) through MLflow's REST API (:mod:`registry.rest`): a
watermark in two calls, a change read as the versions updated since, a full load in one request.

A candidate is built from a handful of tags (``names.INDEX_TAGS``): its figures, operating point, fingerprint, host
and family come from its card (``names.TAG_CARD``) alone. A version whose card is missing or unreadable (registered
before this card format, or edited by hand) is no candidate, and a warning says so.

Until a model's index is loaded, ``get_best`` on a SQL store is computed in the store instead
(:mod:`registry.pushdown`), its answers kept in a :class:`Light` entry under the same TTL and watermark rule. On
PostgreSQL that reads cnnselect's own table of typed candidates (:mod:`registry.table`), which a reader that finds
it behind the watermark brings up to date with the same delta rule.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from registry import names
from registry.selection import Candidate, RankedPool

log = logging.getLogger(__name__)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
DELETED_STAGE = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages.STAGE_DELETED_INTERNAL
MAX_DELTA = 2_000  # more changed versions than this: a full reload is as cheap

_TAGS_SQL = {
    "postgresql": "json_object_agg(key, value)",
    "sqlite": "json_group_object(key, value)",
    "mysql": "json_objectagg(key, value)",
}
# two linear queries joined in Python: a join in SQL gets a quadratic nested loop when the store's statistics are stale
_VERSIONS = """
SELECT version, status, current_stage, creation_time, last_updated_time, run_id, storage_location, source
FROM model_versions WHERE workspace = :ws AND name = :name {only}
"""
_TAGS = """
SELECT version, {agg} AS tags FROM model_version_tags
WHERE workspace = :ws AND name = :name AND key IN :keys {only}
GROUP BY version
"""
_CHANGED = """
SELECT version FROM model_versions
WHERE workspace = :ws AND name = :name AND (version > :top OR current_stage = :deleted OR last_updated_time > :since)
"""
_DONE = """
SELECT version FROM model_version_tags WHERE workspace = :ws AND key = :done AND name = :name AND version >= :low
"""
# registered_models.last_updated_time moves on every version created or deleted; max(version) is one index probe;
# the card count moves when a version gets its card later than it was registered (``cnnselect add-cards``; MLflow
# moves no timestamp for a tag)
_WATERMARK = """
SELECT
  (SELECT last_updated_time FROM registered_models WHERE workspace = :ws AND name = :name),
  (SELECT max(version) FROM model_versions WHERE workspace = :ws AND name = :name),
  (SELECT count(*) FROM model_version_tags WHERE workspace = :ws AND key = :done AND name = :name)
"""
_ALIASES = "SELECT alias, version FROM registered_model_aliases WHERE workspace = :ws AND name = :name"

_engines: dict[tuple[str, int], Any] = {}
_engines_guard = threading.Lock()


def dialect_of(uri: str) -> str | None:
    """The SQL dialect a tracking URI names (``postgresql+psycopg2://...`` -> ``postgresql``); None: not SQL."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    return scheme if scheme in SQL_SCHEMES else None


def shared_engine(uri: str, dialect: str | None) -> Any:
    """One SQLAlchemy engine (and connection pool) per store URI and process, shared by every index in it."""
    key = (uri, os.getpid())  # a forked worker gets its own pool: connections never cross a fork
    engine = _engines.get(key)
    if engine is None:
        with _engines_guard:
            engine = _engines.get(key)
            if engine is None:
                import sqlalchemy as sa

                kw: dict[str, Any] = {"pool_pre_ping": True}
                if dialect == "sqlite":
                    kw = {"connect_args": {"check_same_thread": False}}
                engine = sa.create_engine(uri, **kw)
                if dialect == "sqlite":  # the card's fields cut as on PostgreSQL (registry.pushdown)
                    from registry.pushdown import add_sqlite_functions

                    sa.event.listen(engine, "connect", add_sqlite_functions)
                _engines[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every shared engine (tests, benchmarks measuring a first connection)."""
    with _engines_guard:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@dataclass
class Rows:
    """What a delta refresh starts from: the usable candidates by version and the store's marks at that read."""

    by_version: dict[int, Candidate]
    done: set[int] = field(default_factory=set)  # versions carrying their card (fully logged), usable or not
    pending: set[int] = field(default_factory=set)  # live versions without one yet: a card written later changes them
    deleted: set[int] = field(default_factory=set)
    max_updated: int = 0  # newest last_updated_time seen
    top: int = 0  # highest version number seen

    @property
    def low(self) -> int:
        return min(self.pending, default=self.top + 1)


@dataclass
class Snapshot:
    """What the index holds for one registered model. Readers share it; a refresh swaps in a new one."""

    candidates: list[Candidate]
    aliases: dict[str, str]
    watermark: Hashable
    loaded: float
    checked: float
    verified: dict[str, tuple[bool, float]] = field(default_factory=dict)  # version -> (artifact found, when)
    answers: dict[str, Any] = field(default_factory=dict)  # constraints JSON -> Answer, valid for this load only
    ranked: dict[str, RankedPool] = field(default_factory=dict)  # constraints JSON -> pool in rank order
    rows: Rows | None = None  # SQL stores only

    def ranked_pool(self, key: str, constraints: Any) -> RankedPool:
        """The candidates at the constraints' operating point in rank order, built once per snapshot."""
        pool = self.ranked.get(key)
        if pool is None:
            pool = self.ranked[key] = RankedPool.build(self.candidates, constraints)
        return pool


@dataclass
class Light:
    """What ``get_best`` keeps for a model whose index is not loaded (SQL stores).

    Answers computed in the store (:mod:`registry.pushdown`) per constraints, valid while the watermark they were
    read under holds.
    """

    watermark: Hashable
    created: float
    checked: float
    answers: dict[str, Any] = field(default_factory=dict)
    verified: dict[str, tuple[bool, float]] = field(default_factory=dict)


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
        family=card.family,
        runner=card.runner,
        precision=card.precision,
        fingerprint=card.fingerprint,
        metrics=card.metrics,
        batch_size=card.batch_size,
        threads=card.threads,
        evaluator_version=tags.get(names.TAG_EVALUATOR_VERSION, ""),
        created_ms=int(created_ms or 0),
        artifact_uri=artifact_uri or "",
        host=card.host,
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


class CandidateIndex:
    """Thread-safe: readers share immutable snapshots; one loader per model at a time."""

    def __init__(
        self,
        tracking_uri: str,
        client: Callable[[], Any],
        ttl_s: float = 2.0,
        max_age_s: float = 60.0,
        stale_s: float = 0.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self._client = client
        self.ttl_s, self.max_age_s, self.stale_s = ttl_s, max_age_s, stale_s
        self._refreshing: set[tuple[str, str]] = set()  # (kind, model) refreshed in the background now
        self._workers: dict[str, queue.SimpleQueue[Any]] = {}  # model -> its refresher thread's jobs
        self._pid = os.getpid()
        self.background_refreshes = 0  # started (observable in tests and the bench)
        self._snapshots: dict[str, Snapshot] = {}
        self._light: dict[str, Light] = {}
        # apart from the loaders' locks: a cold answer never waits on a full load
        self._light_locks: dict[str, threading.Lock] = {}
        self._prefetching: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._epoch = 0  # bumped by invalidate(): a refresh that began before it must not store what it read
        self.loads = 0  # full reloads done (observable in tests and the bench)
        self.deltas = 0  # refreshes that read only the changed versions
        self.store_queries: dict[str, int] = {}  # answers computed in the store, by source (registry.pushdown)
        self.table_syncs = self.table_rows = 0  # updates of cnnselect's table made here, rows written (registry.table)
        self._table_off_until = 0.0
        self.dialect = dialect_of(tracking_uri)
        self._uncarded: dict[str, list[str]] = {}  # model -> versions last warned about (said once per change)

    def snapshot(self, model_name: str) -> Snapshot:
        now = time.monotonic()
        snap = self._snapshots.get(model_name)
        if snap is not None and now - snap.checked < self.ttl_s:
            return snap  # the hot path: no lock, no I/O
        if snap is not None and now - snap.checked < self.ttl_s + self.stale_s:
            self._in_background("index", model_name, self._refresh)
            return snap  # the last answer at once; the refresh swaps a new snapshot in when it is done
        return self._refresh(model_name)

    def _in_background(self, kind: str, model_name: str, refresh: Callable[[str], Any]) -> None:
        """Queue ``refresh(model_name)`` for the model's refresher thread unless one of this kind is queued or runs.

        Single flight: a refresh outlasting the TTL starts no second one; readers keep the last answer meanwhile. The
        reader only puts a job on a queue (a thread started per call would make it wait for the start). A failure is
        logged, and the next reader past the TTL tries again.
        """
        key = (kind, model_name)
        with self._guard:
            if self._pid != os.getpid():  # a forked child: its parent's threads and jobs are not here
                self._pid, self._refreshing, self._workers = os.getpid(), set(), {}
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            self.background_refreshes += 1
            jobs = self._workers.get(model_name)
            if jobs is None:
                jobs = self._workers[model_name] = queue.SimpleQueue()
                threading.Thread(
                    target=self._work, args=(jobs,), name=f"cnnselect-refresh-{model_name}", daemon=True
                ).start()  # once per model and process
        jobs.put((key, refresh))

    def _work(self, jobs: queue.SimpleQueue[tuple[tuple[str, str], Callable[[str], Any]]]) -> None:
        """A model's refresher thread: its queued refreshes, one at a time, for the life of the process."""
        while True:
            key, refresh = jobs.get()
            try:
                refresh(key[1])
            except Exception as exc:  # the store went away: readers keep the last answer up to stale_s
                log.warning("background refresh (%s) of %s failed (%s)", key[0], key[1], exc)
            finally:
                with self._guard:
                    self._refreshing.discard(key)

    def refreshing(self, model_name: str) -> bool:
        """A background refresh of the model (its index or its in-store answers) runs now."""
        with self._guard:  # the set changes in other threads
            return any(m == model_name for _, m in self._refreshing)

    def _refresh(self, model_name: str) -> Snapshot:
        """The snapshot checked against the store (one loader per model at a time): kept, patched or reloaded."""
        with self._guard:
            lock = self._locks.setdefault(model_name, threading.Lock())
        with lock:
            epoch = self._epoch
            snap = self._snapshots.get(model_name)
            now = time.monotonic()
            if snap is not None and now - snap.checked < self.ttl_s:
                return snap  # another thread refreshed it while we waited
            mark = self._watermark(model_name)
            fresh_enough = snap is not None and now - snap.loaded < self.max_age_s
            if snap is not None and fresh_enough and mark is not None and mark == snap.watermark:
                snap.checked = now
                return snap
            new = None
            if snap is not None and fresh_enough and snap.rows is not None:
                if self.dialect in _TAGS_SQL:
                    new = self._delta(model_name, snap, mark, now)
                elif self.dialect is None:
                    new = self._delta_rest(model_name, snap, mark, now)
            if new is None:
                candidates, aliases, rows = self._load(model_name, mark)
                self.loads += 1
                new = Snapshot(candidates, aliases, mark, now, now, rows=rows)
            with self._guard:
                if self._epoch == epoch:  # else an invalidate() came meanwhile: the next reader reads again
                    self._snapshots[model_name] = new
            return new

    @property
    def computes_in_store(self) -> bool:
        """A cold ``get_best`` can be computed in this store (see :meth:`best_in_store`).

        SQL stores in SQL (:mod:`registry.pushdown`); a tracking server from its operating point's versions alone
        (:func:`registry.rest.at_point`).
        """
        from registry import pushdown

        return self.dialect in pushdown.DIALECTS or self.over_http

    @property
    def over_http(self) -> bool:
        return self.dialect is None and self.tracking_uri.startswith(("http://", "https://"))

    def loaded(self, model_name: str) -> bool:
        """The model's index is in memory (of any age): ``get_best`` answers from it, refreshing as needed."""
        return model_name in self._snapshots

    def light(self, model_name: str) -> Light:
        """The answers computed in the store for this model, dropped when the watermark moves (TTL as above).

        Past the TTL, a light entry holding answers is served as it is while its watermark is checked in the
        background (within ``stale_s``), as a snapshot is.
        """
        now = time.monotonic()
        lt = self._light.get(model_name)
        if lt is not None and now - lt.checked < self.ttl_s:
            return lt
        if lt is not None and lt.answers and now - lt.checked < self.ttl_s + self.stale_s:
            self._in_background("light", model_name, self._refresh_light)
            return lt
        return self._refresh_light(model_name)

    def _refresh_light(self, model_name: str) -> Light:
        with self._guard:
            lock = self._light_locks.setdefault(model_name, threading.Lock())
        with lock:
            epoch = self._epoch
            lt = self._light.get(model_name)
            now = time.monotonic()
            if lt is not None and now - lt.checked < self.ttl_s:
                return lt
            mark = self._watermark(model_name)
            if lt is not None and mark == lt.watermark and now - lt.created < self.max_age_s:
                lt.checked = now
                return lt
            lt = Light(mark, now, now)
            with self._guard:
                if self._epoch == epoch:
                    self._light[model_name] = lt
            return lt

    def prefetch(self, model_name: str) -> None:
        """Load the model's index in a background thread, once.

        Later changes then arrive as deltas (ms) instead of being computed in the store again. A failure is logged;
        answers keep coming from the store meanwhile.
        """

        def load() -> None:
            try:
                self.snapshot(model_name)
            except Exception as exc:  # the store went away meanwhile: nothing lost, the next cold answer tries again
                log.warning("background index load of %s failed (%s)", model_name, exc)
            finally:
                with self._guard:
                    self._prefetching.discard(model_name)

        with self._guard:
            if model_name in self._snapshots or model_name in self._prefetching:
                return
            self._prefetching.add(model_name)
        threading.Thread(target=load, name=f"cnnselect-index-{model_name}", daemon=True).start()

    def prefetching(self, model_name: str) -> bool:
        return model_name in self._prefetching

    def best_in_store(
        self,
        model_name: str,
        constraints: Any,
        artifact_ok: Callable[[Candidate], bool],
        watermark: Hashable | None = None,
    ) -> tuple[Candidate, Any] | None:
        """``get_best`` computed in the store without loading the index (see :mod:`registry.pushdown`).

        ``watermark``: the model's watermark when the caller has just read it (``Light.watermark``); it says whether
        cnnselect's table (:mod:`registry.table`) is current.
        None when the store cannot (not SQL, or anything unusual): the caller loads the index.
        """
        if self.over_http:
            return self._best_rest(model_name, constraints, artifact_ok)
        got = self.settle_in_store(model_name, constraints, artifact_ok, watermark)
        return got.value if got is not None else None

    def _best_rest(
        self, model_name: str, constraints: Any, artifact_ok: Callable[[Candidate], bool]
    ) -> tuple[Candidate, Any] | None:
        """A runner target's best over the REST API: its operating point's versions read, ranked as the index ranks.

        None when nothing there is feasible with its artifact in place: the index decides, and names the misses.
        """
        from registry import logged, pushdown, rest

        got = logged.settle(self._client(), model_name, constraints)  # the best LoggedModels first; None: not sure
        if got is not None:
            self.store_queries["logged"] = self.store_queries.get("logged", 0) + 1
            if got.value is None or artifact_ok(got.value[0]):
                return got.value
        try:
            versions = rest.at_point(self._client(), model_name, pushdown.point_prefix(constraints))
        except Exception as exc:  # a filter the server refuses: the index decides
            log.warning("get_best at the operating point of %s failed (%s); loading the index", model_name, exc)
            return None
        self.store_queries["rest"] = self.store_queries.get("rest", 0) + 1
        pool = RankedPool.build(
            in_version_order(self._rows_rest(model_name, versions, warn=False).by_version), constraints
        )
        for verdict in pool.feasible():
            if artifact_ok(verdict.candidate):
                return verdict.candidate, verdict
        return None

    def settle_in_store(
        self,
        model_name: str,
        constraints: Any,
        artifact_ok: Callable[[Candidate], bool],
        watermark: Hashable | None = None,
    ) -> Any:
        """:meth:`best_in_store` as a ``pushdown.Settled`` (its value None: nothing feasible, for certain), or None."""
        return self.in_store(model_name, watermark, lambda store: store.settle(constraints, artifact_ok))

    def in_store(self, model_name: str, watermark: Hashable | None, query: Callable[[InStore], Any]) -> Any:
        """``query`` on one connection to the store, cnnselect's table brought up to date first; None on any failure.

        None too where the store cannot compute answers (not SQL): the caller loads the index.
        """
        if self.dialect is None or not self.computes_in_store:
            return None
        try:
            with self.engine.connect() as conn:
                return query(InStore(self, conn, model_name, self._table_current(conn, model_name, watermark)))
        except Exception as exc:  # a value the store cannot cast, an MLflow schema we do not know: the index decides
            log.warning("get_best in the store for %s failed (%s); loading the index", model_name, exc)
            return None

    def _table_current(self, conn: Any, model_name: str, watermark: Hashable | None) -> bool:
        """Whether cnnselect's table reflects the model as of ``watermark`` (or later), brought up to date if need be.

        False where it does not apply (not PostgreSQL), while another process updates it, or for ``max_age_s``
        after it failed (a read-only role, say): MLflow's tables answer meanwhile.
        """
        from registry import table

        if self.dialect not in table.DIALECTS or time.monotonic() < self._table_off_until:
            return False
        try:
            want = table.mark(watermark if watermark is not None else self._watermark(model_name, conn))
            if want is not None and table.current(conn, model_name, WORKSPACE) == want:
                return True
            conn.rollback()  # end this read's transaction: the update commits on another connection
            done = table.sync(
                self.engine,
                model_name,
                WORKSPACE,
                DELETED_STAGE,
                lambda c: self._watermark(model_name, c),
                lambda c, only: self._read_sql(c, model_name, only),
                MAX_DELTA,
            )
        except Exception as exc:
            conn.rollback()
            self._table_off_until = time.monotonic() + self.max_age_s
            log.warning(
                "cnnselect's candidates table is not usable (%s); reading MLflow's tables for the next %.0f s",
                exc,
                self.max_age_s,
            )
            return False
        if done is None:
            return False
        self.table_syncs += 1
        self.table_rows += done[1]
        return True

    def invalidate(self, model_name: str | None = None) -> None:
        with self._guard:
            self._epoch += 1
            if model_name is None:
                self._snapshots.clear()
                self._light.clear()
            else:
                self._snapshots.pop(model_name, None)
                self._light.pop(model_name, None)

    def _warn(self, model_name: str, uncarded: list[str]) -> None:
        if uncarded and self._uncarded.get(model_name) != uncarded:
            self._uncarded[model_name] = uncarded
            warn_uncarded(model_name, uncarded)

    # -- SQL stores ---------------------------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        return shared_engine(self.tracking_uri, self.dialect)

    def _args(self, model_name: str, **more: Any) -> dict[str, Any]:
        return {"ws": WORKSPACE, "name": model_name, **more}

    def _watermark(self, model_name: str, conn: Any = None) -> Hashable | None:
        if self.dialect is None:
            from registry import rest

            return rest.watermark(self._client(), model_name)  # two REST calls
        if conn is None:
            with self.engine.connect() as own:
                return self._watermark(model_name, own)
        import sqlalchemy as sa

        args = self._args(model_name, done=names.TAG_CARD)
        row = tuple(conn.execute(sa.text(_WATERMARK), args).one())
        aliases = tuple(sorted(conn.execute(sa.text(_ALIASES), args).all()))
        return (*row, aliases)

    def _load(self, model_name: str, mark: Hashable = None) -> tuple[list[Candidate], dict[str, str], Rows | None]:
        if self.dialect in _TAGS_SQL:
            try:
                with self.engine.connect() as conn:
                    rows = self._read_sql(conn, model_name, None)
                    aliases = self._aliases(conn, model_name)
                return in_version_order(rows.by_version), aliases, rows
            except Exception as exc:  # an MLflow schema we do not know: the client path is always right, only slower
                log.warning("fast SQL read of %s failed (%s); falling back to MlflowClient", model_name, exc)
                self.dialect = None
                mark = None  # read again by the client, for its aliases
        return self._load_client(model_name, mark)

    def _aliases(self, conn: Any, model_name: str) -> dict[str, str]:
        import sqlalchemy as sa

        return {a: str(v) for a, v in conn.execute(sa.text(_ALIASES), self._args(model_name))}

    def _read_sql(self, conn: Any, model_name: str, only: list[int] | None) -> Rows:
        """Versions (all of them, or ``only`` these) and their tags: usable candidates plus the marks of this read."""
        import sqlalchemy as sa

        where = "AND version IN :only" if only is not None else ""
        args = self._args(model_name, keys=list(names.INDEX_TAGS))
        params: list[Any] = [sa.bindparam("keys", expanding=True)]
        if only is not None:
            args["only"], params = only, [*params, sa.bindparam("only", expanding=True)]
        tags_sql = sa.text(_TAGS.format(agg=_TAGS_SQL[self.dialect or ""], only=where)).bindparams(*params)
        tags_by_version = {
            int(v): (json.loads(t) if isinstance(t, str) else t) for v, t in conn.execute(tags_sql, args)
        }
        versions_sql = sa.text(_VERSIONS.format(only=where))
        if only is not None:
            versions_sql = versions_sql.bindparams(sa.bindparam("only", expanding=True))
        rows, uncarded = Rows({}), []
        for version, status, stage, created, updated, run_id, location, source in conn.execute(versions_sql, args):
            version = int(version)
            rows.max_updated, rows.top = max(rows.max_updated, int(updated or 0)), max(rows.top, version)
            tags = tags_by_version.get(version, {})
            if tags.get(names.TAG_CARD):
                rows.done.add(version)
            elif stage != DELETED_STAGE:
                rows.pending.add(version)
            if stage == DELETED_STAGE:
                rows.deleted.add(version)
            if status == "READY" and stage != DELETED_STAGE and usable(tags):
                uri = location or source or ""
                c = candidate_from_tags(model_name, str(version), run_id, created, tags, uri)
                if c is None:
                    uncarded.append(str(version))
                else:
                    rows.by_version[version] = c
        self._warn(model_name, uncarded)
        return rows

    def _delta(self, model_name: str, snap: Snapshot, mark: Hashable, now: float) -> Snapshot | None:
        """The snapshot with only the changed versions read again; None when a full reload is the better move."""
        import sqlalchemy as sa

        old = snap.rows
        if old is None:
            return None
        args = self._args(model_name, since=old.max_updated, top=old.top, low=old.low)
        args.update(done=names.TAG_CARD, deleted=DELETED_STAGE)
        try:
            with self.engine.connect() as conn:
                changed = {int(v) for (v,) in conn.execute(sa.text(_CHANGED), args)} - old.deleted
                done_now = {int(v) for (v,) in conn.execute(sa.text(_DONE), args)}
                changed |= done_now - old.done
                if len(changed) > MAX_DELTA:
                    return None
                fresh = self._read_sql(conn, model_name, sorted(changed)) if changed else Rows({})
        except Exception as exc:  # a failed delta is retried as a full reload
            log.warning("delta refresh of %s failed (%s); reloading in full", model_name, exc)
            return None
        aliases = {a: str(v) for a, v in mark[-1]} if isinstance(mark, tuple) else {}  # the watermark read them
        return self._merged(snap, old, changed, fresh, aliases, mark, now)

    def _merged(
        self,
        snap: Snapshot,
        old: Rows,
        changed: set[int],
        fresh: Rows,
        aliases: dict[str, str],
        mark: Hashable,
        now: float,
    ) -> Snapshot:
        """The snapshot (its rows ``old``) with the ``changed`` versions replaced by what ``fresh`` read of them.

        A changed version ``fresh`` does not hold is gone (deleted, or no longer usable).
        """
        by_version = old.by_version.copy()
        gone = [c for v in changed if (c := by_version.pop(v, None)) is not None]
        came = [fresh.by_version[v] for v in sorted(fresh.by_version)]
        by_version.update(fresh.by_version)
        ranked = {}
        for key, pool in snap.ranked.copy().items():  # a copy: readers may add pools meanwhile
            moved = pool.updated(gone, came)
            if moved is not None:  # else the target fingerprint moved: built again on first use
                ranked[key] = moved
        rows = Rows(
            by_version,
            (old.done - changed) | fresh.done,
            (old.pending - changed) | fresh.pending,
            old.deleted | fresh.deleted,
            max(old.max_updated, fresh.max_updated),
            max(old.top, fresh.top),
        )
        self.deltas += 1
        if not gone and all(v > old.top for v in fresh.by_version):  # only new versions: they go at the end
            candidates = snap.candidates + came
        else:
            candidates = in_version_order(by_version)
        return Snapshot(candidates, aliases, mark, snap.loaded, now, ranked=ranked, rows=rows)

    # -- any store (HTTP tracking server): MLflow's REST API (registry.rest) -------------------------------------

    def _load_client(self, model_name: str, mark: Hashable = None) -> tuple[list[Candidate], dict[str, str], Rows]:
        """Every version in one request; the aliases those the watermark just read (else read with it)."""
        from registry import rest

        client = self._client()
        rows = self._rows_rest(model_name, rest.every_version(client, model_name))
        if not isinstance(mark, rest.Mark):
            mark = rest.watermark(client, model_name)
        aliases = dict(mark.aliases) if isinstance(mark, rest.Mark) else {}
        return in_version_order(rows.by_version), aliases, rows

    def _rows_rest(self, model_name: str, versions: list[Any], warn: bool = True) -> Rows:
        """What ``_read_sql`` makes of versions, from ``ModelVersion`` entities (live ones: searches hide the rest)."""
        rows, uncarded = Rows({}), []
        for mv in versions:
            version, tags = int(mv.version), mv.tags or {}
            rows.max_updated = max(rows.max_updated, int(mv.last_updated_timestamp or 0))
            rows.top = max(rows.top, version)
            (rows.done if tags.get(names.TAG_CARD) else rows.pending).add(version)
            if mv.status == "READY" and usable(tags):
                uri = mv.source or ""
                c = candidate_from_tags(model_name, str(version), mv.run_id, mv.creation_timestamp, tags, uri)
                if c is None:
                    uncarded.append(str(version))
                else:
                    rows.by_version[version] = c
        if warn:  # not for a part of the versions: the full load says it of all of them
            self._warn(model_name, uncarded)
        return rows

    def _delta_rest(self, model_name: str, snap: Snapshot, mark: Hashable, now: float) -> Snapshot | None:
        """Only the versions updated since the snapshot's newest update read again; None: reload in full."""
        from registry import rest

        old = snap.rows
        if old is None or not isinstance(mark, rest.Mark) or not isinstance(snap.watermark, rest.Mark):
            return None
        if rest.unexplained(snap.watermark, mark):
            return None  # a version was deleted: which one, no REST call says
        try:
            versions = rest.changed(self._client(), model_name, old.max_updated, MAX_DELTA)
        except Exception as exc:  # a failed delta is retried as a full reload
            log.warning("delta refresh of %s failed (%s); reloading in full", model_name, exc)
            return None
        if versions is None:
            return None
        fresh = self._rows_rest(model_name, versions)
        return self._merged(snap, old, {int(mv.version) for mv in versions}, fresh, dict(mark.aliases), mark, now)


@dataclass
class InStore:
    """One connection to a SQL store, cnnselect's table checked once: what ``get_best`` computes there."""

    index: CandidateIndex
    conn: Any
    model_name: str
    typed: bool  # cnnselect's table is current for the model (registry.table)

    def _read(self, conn: Any, versions: list[int]) -> dict[int, Candidate]:
        return self.index._read_sql(conn, self.model_name, versions).by_version

    def settle(
        self,
        constraints: Any,
        artifact_ok: Callable[[Candidate], bool],
        points: list[Any] | None = None,
        newest_ok: Callable[[Candidate], bool] | None = None,
    ) -> Any:
        """``pushdown.settle``: a ``Settled`` best feasible candidate, or None (not sure).

        ``points``: several runner targets ranked together in one query (a host target's, its machine found there
        and checked with ``newest_ok`` unless pinned).
        """
        from registry import pushdown

        return pushdown.settle(
            self.conn,
            self.index.dialect or "",
            self.model_name,
            constraints,
            self._read,
            artifact_ok,
            WORKSPACE,
            DELETED_STAGE,
            self.index.store_queries,
            self.typed,
            points,
            newest_ok,
        )


def in_version_order(by_version: dict[int, Candidate]) -> list[Candidate]:
    return [by_version[v] for v in sorted(by_version)]
