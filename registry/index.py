"""An in-process index of candidates per registered model: answers from memory, refreshed by TTL plus a watermark.

The store below it (:mod:`registry.stores`, one per tracking-URI scheme) reads versions and a typed watermark; this
module owns the policy. Within ``ttl_s`` of the last check a read touches no store. After it, one cheap watermark
read (one REST call waited for over HTTP; one query on a SQL store) decides whether anything changed; if so, only the
versions that changed are read again (a *delta*). No clock is compared across writers. ``max_age_s`` forces a full
reload regardless, which catches tag edits the watermark cannot see. A refresh never blocks a reader that has an answer:
past the TTL, the first reader starts one refresh in a background thread (single flight per model: one that
outlasts the TTL starts no second) and every reader gets the last snapshot at once, for up to ``stale_s`` past the
TTL; after that (or with ``stale_s`` 0) a reader waits for the refresh, so no answer is ever older than that.

Until a model's index is loaded, a store that can (``Store.answers_cold``) answers ``get_best`` without reading every
version; those answers are kept in a :class:`Light` entry under the same TTL and watermark rule.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from registry.selection import Candidate, RankedPool, Verdict
from registry.stores import Store, store_for
from registry.stores.api import ApiStore
from registry.stores.versions import Rows, warn_uncarded

log = logging.getLogger(__name__)


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
    rows: Rows | None = None

    def ranked_pool(self, key: str, constraints: Any) -> RankedPool:
        """The candidates at the constraints' operating point in rank order, built once per snapshot."""
        pool = self.ranked.get(key)
        if pool is None:
            pool = self.ranked[key] = RankedPool.build(self.candidates, constraints)
        return pool


@dataclass
class Light:
    """What ``get_best`` keeps for a model whose index is not loaded: the store's cold answers per constraints.

    Valid while the watermark they were read under holds.
    """

    watermark: Hashable
    created: float
    checked: float
    answers: dict[str, Any] = field(default_factory=dict)
    verified: dict[str, tuple[bool, float]] = field(default_factory=dict)


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
        self.store: Store = store_for(tracking_uri, client)
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
        self.store_queries: dict[str, int] = {}  # cold answers asked of the store, by store kind
        self._uncarded: dict[str, list[str]] = {}  # model -> versions last warned about (said once per change)

    @property
    def computes_in_store(self) -> bool:
        """A cold ``get_best`` can be answered by the store without a full read (see :meth:`best_in_store`)."""
        return self.store.answers_cold

    @property
    def over_http(self) -> bool:
        return isinstance(self.store, ApiStore) and self.store.answers_cold

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
            mark = self.store.watermark(model_name)
            fresh_enough = snap is not None and now - snap.loaded < self.max_age_s
            if snap is not None and fresh_enough and mark is not None and mark == snap.watermark:
                snap.checked = now
                return snap
            new = self._delta(model_name, snap, mark, now) if snap is not None and fresh_enough else None
            if new is None:
                rows, aliases = self._load(model_name, mark)
                self.loads += 1
                new = Snapshot(rows.in_version_order(), aliases, mark, now, now, rows=rows)
            with self._guard:
                if self._epoch == epoch:  # else an invalidate() came meanwhile: the next reader reads again
                    self._snapshots[model_name] = new
            return new

    def _load(self, model_name: str, mark: Hashable) -> tuple[Rows, dict[str, str]]:
        try:
            rows, aliases = self.store.load(model_name, mark)
        except Exception as exc:
            if isinstance(self.store, ApiStore):
                raise
            # an MLflow schema mlflow_tables does not know: MLflow's public API is always right, only slower
            log.warning("fast SQL read of %s failed (%s); falling back to MlflowClient", model_name, exc)
            self.store = ApiStore(self.tracking_uri, self._client)
            rows, aliases = self.store.load(model_name)
        self._warn(model_name, rows.uncarded)
        return rows, aliases

    def _delta(self, model_name: str, snap: Snapshot, mark: Hashable, now: float) -> Snapshot | None:
        """The snapshot with only the changed versions read again; None when a full reload is the better move."""
        old = snap.rows
        if old is None:
            return None
        try:
            got = self.store.delta(model_name, old, snap.watermark, mark)
        except Exception as exc:  # a failed delta is retried as a full reload
            log.warning("delta refresh of %s failed (%s); reloading in full", model_name, exc)
            return None
        if got is None:
            return None
        changed, fresh = got
        by_version = old.by_version
        gone = [by_version[v] for v in changed if v in by_version]
        came = [fresh.by_version[v] for v in sorted(fresh.by_version)]
        ranked = {}
        for key, pool in snap.ranked.copy().items():  # a copy: readers may add pools meanwhile
            moved = pool.updated(gone, came)
            if moved is not None:  # else the target fingerprint moved: built again on first use
                ranked[key] = moved
        rows = old.merged(changed, fresh)
        self.deltas += 1
        if not gone and all(v > old.top for v in fresh.by_version):  # only new versions: they go at the end
            candidates = snap.candidates + came
        else:
            candidates = rows.in_version_order()
        aliases = self.store.aliases_of(mark)
        return Snapshot(candidates, aliases, mark, snap.loaded, now, ranked=ranked, rows=rows)

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
            mark = self.store.watermark(model_name)
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

    def best_in_store(self, model_name: str, constraints: Any) -> tuple[Candidate, Verdict] | None:
        """``get_best`` answered by the store without loading the index (see :mod:`registry.stores`).

        Its artifact is the caller's to check. None when the store cannot, is not sure, or finds nothing feasible:
        the caller loads the index, which names the nearest misses.
        """
        if not self.store.answers_cold:
            return None
        self.store_queries[self.store.kind] = self.store_queries.get(self.store.kind, 0) + 1
        try:
            got = self.store.best(model_name, constraints)
        except Exception as exc:  # a value the store cannot cast, a filter the server refuses: the index decides
            log.warning("get_best in the store for %s failed (%s); loading the index", model_name, exc)
            return None
        return got.value if got is not None else None

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
