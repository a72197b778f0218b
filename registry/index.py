"""An in-process index of candidates per registered model: answers from memory, refreshed by TTL plus a watermark.

Within ``ttl_s`` of the last check a read touches no database. After it, one cheap watermark query (version count,
last update, fully logged versions, aliases) decides whether to reload; ``max_age_s`` forces a reload regardless, which
catches tag edits the watermark cannot see. SQL stores (SQLite, PostgreSQL, MySQL) are read with one aggregate query
over MLflow's tables; any other store (an HTTP tracking server) through ``MlflowClient`` pages.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from registry import names
from registry.selection import Candidate

log = logging.getLogger(__name__)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME

_TAGS_SQL = {
    "postgresql": "json_object_agg(t.key, t.value)",
    "sqlite": "json_group_object(t.key, t.value)",
    "mysql": "json_objectagg(t.key, t.value)",
}
# two linear queries joined in Python: a join in SQL gets a quadratic nested loop when the store's statistics are stale
_VERSIONS = """
SELECT version, creation_time, run_id FROM model_versions
WHERE workspace = :ws AND name = :name AND status = 'READY' AND current_stage <> 'Deleted_Internal'
"""
_TAGS = """
SELECT version, {agg} AS tags FROM model_version_tags t
WHERE workspace = :ws AND name = :name AND key LIKE :prefix
GROUP BY version
"""
_WATERMARK = """
SELECT
  (SELECT last_updated_time FROM registered_models WHERE workspace = :ws AND name = :name),
  (SELECT count(*) FROM model_versions WHERE workspace = :ws AND name = :name),
  (SELECT max(last_updated_time) FROM model_versions WHERE workspace = :ws AND name = :name),
  (SELECT count(*) FROM model_version_tags WHERE workspace = :ws AND key = :done AND name = :name)
"""
_ALIASES = "SELECT alias, version FROM registered_model_aliases WHERE workspace = :ws AND name = :name"


@dataclass
class Snapshot:
    """What the index holds for one registered model."""

    candidates: list[Candidate]
    aliases: dict[str, str]
    watermark: Hashable
    loaded: float
    checked: float
    verified: set[str] = field(default_factory=set)  # versions whose artifact was found since this load
    answers: dict[str, Any] = field(default_factory=dict)  # constraints JSON -> Answer, valid for this load only


def candidate_from_tags(model_name: str, version: str, run_id: str, created_ms: int, tags: dict[str, Any]) -> Candidate:
    metrics: dict[str, float] = {}
    for k, v in tags.items():
        if k.startswith(names.METRIC_TAG_PREFIX):
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):  # MLflow would have stored NaN as 0 (mlflow#25640): unmeasured instead
                metrics[k[len(names.METRIC_TAG_PREFIX) :]] = value
    try:
        batch = int(tags.get(names.TAG_BATCH_SIZE) or 1)
    except ValueError:
        batch = -1  # unreadable operating point: never matches a constraint
    return Candidate(
        model_name=model_name,
        version=str(version),
        run_id=tags.get(names.TAG_RUN_ID) or run_id or "",
        variant=tags.get(names.TAG_VARIANT, ""),
        family=tags.get(names.TAG_FAMILY, ""),
        runner=tags.get(names.TAG_RUNNER, ""),
        precision=tags.get(names.TAG_PRECISION, ""),
        fingerprint=tags.get(names.TAG_FINGERPRINT, ""),
        metrics=metrics,
        batch_size=batch,
        threads=tags.get(names.TAG_THREADS) or "all",
        evaluator_version=tags.get(names.TAG_EVALUATOR_VERSION, ""),
        created_ms=int(created_ms or 0),
    )


def usable(tags: dict[str, Any]) -> bool:
    """Fully logged (the run-id tag is written last) and successfully evaluated."""
    return tags.get(names.TAG_STATUS) == names.STATUS_OK and bool(tags.get(names.TAG_RUN_ID))


class CandidateIndex:
    """Thread-safe: readers share immutable snapshots; one loader per model at a time."""

    def __init__(
        self, tracking_uri: str, client: Callable[[], Any], ttl_s: float = 2.0, max_age_s: float = 60.0
    ) -> None:
        self.tracking_uri = tracking_uri
        self._client = client
        self.ttl_s, self.max_age_s = ttl_s, max_age_s
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._engine: Any = None
        self.loads = 0  # reloads done (observable in tests and the bench)
        scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
        self.dialect = scheme if scheme in SQL_SCHEMES else None

    def snapshot(self, model_name: str) -> Snapshot:
        now = time.monotonic()
        snap = self._snapshots.get(model_name)
        if snap is not None and now - snap.checked < self.ttl_s:
            return snap  # the hot path: no lock, no I/O
        with self._guard:
            lock = self._locks.setdefault(model_name, threading.Lock())
        with lock:
            snap = self._snapshots.get(model_name)
            now = time.monotonic()
            if snap is not None and now - snap.checked < self.ttl_s:
                return snap  # another thread refreshed it while we waited
            mark = self._watermark(model_name)
            if snap is not None and mark is not None and mark == snap.watermark and now - snap.loaded < self.max_age_s:
                snap.checked = now
                return snap
            candidates, aliases = self._load(model_name)
            self.loads += 1
            snap = Snapshot(candidates, aliases, mark, now, now)
            self._snapshots[model_name] = snap
            return snap

    def invalidate(self, model_name: str | None = None) -> None:
        with self._guard:
            if model_name is None:
                self._snapshots.clear()
            else:
                self._snapshots.pop(model_name, None)

    # -- SQL stores ---------------------------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        if self._engine is None:
            import sqlalchemy as sa

            kw: dict[str, Any] = {"pool_pre_ping": True}
            if self.dialect == "sqlite":
                kw = {"connect_args": {"check_same_thread": False}}
            self._engine = sa.create_engine(self.tracking_uri, **kw)
        return self._engine

    def _watermark(self, model_name: str) -> Hashable | None:
        if self.dialect is None:
            return None  # no cheap watermark over HTTP: every TTL expiry reloads
        import sqlalchemy as sa

        args = {"ws": WORKSPACE, "name": model_name, "done": names.TAG_RUN_ID}
        with self.engine.connect() as conn:
            row = tuple(conn.execute(sa.text(_WATERMARK), args).one())
            aliases = tuple(sorted(conn.execute(sa.text(_ALIASES), args).all()))
        return (*row, aliases)

    def _load(self, model_name: str) -> tuple[list[Candidate], dict[str, str]]:
        if self.dialect in _TAGS_SQL:
            try:
                return self._load_sql(model_name)
            except Exception as exc:  # an MLflow schema we do not know: the client path is always right, only slower
                log.warning("fast SQL read of %s failed (%s); falling back to MlflowClient", model_name, exc)
                self.dialect = None
        return self._load_client(model_name)

    def _load_sql(self, model_name: str) -> tuple[list[Candidate], dict[str, str]]:
        import sqlalchemy as sa

        args = {"ws": WORKSPACE, "name": model_name, "prefix": names.TAG_PREFIX + "%"}
        out = []
        with self.engine.connect() as conn:
            tags_by_version = {
                int(v): (json.loads(t) if isinstance(t, str) else t)
                for v, t in conn.execute(sa.text(_TAGS.format(agg=_TAGS_SQL[self.dialect or ""])), args)
            }
            for version, created, run_id in conn.execute(sa.text(_VERSIONS), args):
                tags = tags_by_version.get(int(version), {})
                if usable(tags):
                    out.append(candidate_from_tags(model_name, str(version), run_id, created, tags))
            aliases = {a: str(v) for a, v in conn.execute(sa.text(_ALIASES), args)}
        return out, aliases

    # -- any store (HTTP tracking server) -----------------------------------------------------------------------

    def _load_client(self, model_name: str) -> tuple[list[Candidate], dict[str, str]]:
        from mlflow.exceptions import MlflowException

        client = self._client()
        out: list[Candidate] = []
        token = None
        while True:
            page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
            for mv in page:
                tags = mv.tags or {}
                if mv.status == "READY" and usable(tags):
                    out.append(candidate_from_tags(model_name, str(mv.version), mv.run_id, mv.creation_timestamp, tags))
            token = page.token
            if not token:
                break
        try:
            aliases = dict(client.get_registered_model(model_name).aliases or {})
        except MlflowException:
            aliases = {}
        return out, {a: str(v) for a, v in aliases.items()}
