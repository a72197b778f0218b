"""MLflow's own tables, read directly: the one module that says which MLflow schema the read path relies on.

Read (never written) on a SQL tracking store, where MLflow's public API cannot meet the read path's targets (a cold
``get_best`` ≤ 50 ms on PostgreSQL at 10,000 versions, see ``bench/bench_get_best.py``): ``search_model_versions``
builds every version entity with all its tags, where one query here reads the four tags the index needs.

The schema, as of MLflow 3.x (the ``workspace`` columns came with MLflow 3's workspaces): ``registered_models``
(``workspace, name, creation_time, last_updated_time``), ``model_versions`` (``workspace, name, version, status,
current_stage, creation_time, last_updated_time, run_id, storage_location, source``), ``model_version_tags``
(``workspace, name, version, key, value``) and ``registered_model_aliases`` (``workspace, name, alias, version``).
A query that fails here (a schema this does not know) is logged by the caller, which reads through MLflow's public API
instead (:mod:`registry.stores.api`): always right, only slower. :mod:`registry.stores.pushdown` reads the same
tables, through the names declared here.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from registry import names
from registry.stores.versions import Rows

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
DELETED_STAGE = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages.STAGE_DELETED_INTERNAL
VERSIONS, TAGS = "model_versions", "model_version_tags"
MODELS, ALIASES = "registered_models", "registered_model_aliases"

_TAGS_AGG = {
    "postgresql": "json_object_agg(key, value)",
    "sqlite": "json_group_object(key, value)",
    "mysql": "json_objectagg(key, value)",
}
READABLE = tuple(_TAGS_AGG)  # the dialects whose tags this module can aggregate
# two linear queries joined in Python: a join in SQL gets a quadratic nested loop when the store's statistics are stale
_VERSIONS = f"""
SELECT version, status, current_stage, creation_time, last_updated_time, run_id, storage_location, source
FROM {VERSIONS} WHERE workspace = :ws AND name = :name {{only}}
"""
_TAGS = f"""
SELECT version, {{agg}} AS tags FROM {TAGS}
WHERE workspace = :ws AND name = :name AND key IN :keys {{only}}
GROUP BY version
"""
_CHANGED = f"""
SELECT version FROM {VERSIONS}
WHERE workspace = :ws AND name = :name AND (version > :top OR current_stage = :deleted OR last_updated_time > :since)
"""
_DONE = f"""
SELECT version FROM {TAGS} WHERE workspace = :ws AND key = :done AND name = :name AND version >= :low
"""
# registered_models.last_updated_time moves on every version created or deleted; max(version) is one index probe;
# the card count moves when a version gets its card later than it was registered (``cnnselect add-cards``; MLflow
# moves no timestamp for a tag)
_WATERMARK = f"""
SELECT
  (SELECT last_updated_time FROM {MODELS} WHERE workspace = :ws AND name = :name),
  (SELECT max(version) FROM {VERSIONS} WHERE workspace = :ws AND name = :name),
  (SELECT count(*) FROM {TAGS} WHERE workspace = :ws AND key = :done AND name = :name)
"""
_ALIASES = f"SELECT alias, version FROM {ALIASES} WHERE workspace = :ws AND name = :name"

_engines: dict[tuple[str, int], Any] = {}
_engines_guard = threading.Lock()


def dialect_of(uri: str) -> str | None:
    """The SQL dialect a tracking URI names (``postgresql+psycopg2://...`` -> ``postgresql``); None: not SQL."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    return scheme if scheme in SQL_SCHEMES else None


def split_part(text: str | None, delimiter: str, n: int) -> str | None:
    """PostgreSQL's ``split_part`` for SQLite: the ``n``-th field (from 1), "" past the last one."""
    if text is None:
        return None
    parts = text.split(delimiter)
    return parts[n - 1] if 0 < n <= len(parts) else ""


def add_sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    """On each new SQLite connection (a SQLAlchemy ``connect`` listener): what the card query needs."""
    dbapi_connection.create_function("split_part", 3, split_part, deterministic=True)


def shared_engine(uri: str) -> Any:
    """One SQLAlchemy engine (and connection pool) per store URI and process, shared by every reader in it."""
    key = (uri, os.getpid())  # a forked worker gets its own pool: connections never cross a fork
    engine = _engines.get(key)
    if engine is None:
        with _engines_guard:
            engine = _engines.get(key)
            if engine is None:
                import sqlalchemy as sa

                sqlite = dialect_of(uri) == "sqlite"
                kw: dict[str, Any] = {"pool_pre_ping": True}
                if sqlite:
                    kw = {"connect_args": {"check_same_thread": False}}
                engine = sa.create_engine(uri, **kw)
                if sqlite:  # the card's fields cut as on PostgreSQL (registry.stores.pushdown)
                    sa.event.listen(engine, "connect", add_sqlite_functions)
                _engines[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every shared engine (tests, benchmarks measuring a first connection)."""
    with _engines_guard:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _args(model_name: str, **more: Any) -> dict[str, Any]:
    return {"ws": WORKSPACE, "name": model_name, **more}


def watermark(conn: Any, model_name: str) -> tuple[Any, ...]:
    """The registered model's last update, highest version, versions carrying their card, and its aliases."""
    import sqlalchemy as sa

    args = _args(model_name, done=names.TAG_CARD)
    row = tuple(conn.execute(sa.text(_WATERMARK), args).one())
    return (*row, tuple(sorted(conn.execute(sa.text(_ALIASES), args).all())))


def aliases(conn: Any, model_name: str) -> dict[str, str]:
    import sqlalchemy as sa

    return {a: str(v) for a, v in conn.execute(sa.text(_ALIASES), _args(model_name))}


def read_rows(conn: Any, dialect: str, model_name: str, only: list[int] | None) -> Rows:
    """Versions (all of them, or ``only`` these) and the tags the index reads: their candidates and marks."""
    import sqlalchemy as sa

    where = "AND version IN :only" if only is not None else ""
    args = _args(model_name, keys=list(names.INDEX_TAGS))
    params: list[Any] = [sa.bindparam("keys", expanding=True)]
    if only is not None:
        args["only"], params = only, [*params, sa.bindparam("only", expanding=True)]
    tags_sql = sa.text(_TAGS.format(agg=_TAGS_AGG[dialect], only=where)).bindparams(*params)
    tags_by_version = {int(v): (json.loads(t) if isinstance(t, str) else t) for v, t in conn.execute(tags_sql, args)}
    versions_sql = sa.text(_VERSIONS.format(only=where))
    if only is not None:
        versions_sql = versions_sql.bindparams(sa.bindparam("only", expanding=True))
    rows = Rows({})
    for version, status, stage, created, updated, run_id, location, source in conn.execute(versions_sql, args):
        v = int(version)
        tags = tags_by_version.get(v, {})
        deleted = stage == DELETED_STAGE
        rows.add(model_name, v, tags, status == "READY", deleted, updated, run_id, created, location or source or "")
    return rows


def changed(conn: Any, model_name: str, old: Rows) -> set[int]:
    """The versions changed since ``old`` was read: new, deleted, updated, or given their card since."""
    import sqlalchemy as sa

    args = _args(model_name, since=old.max_updated, top=old.top, low=old.low, done=names.TAG_CARD)
    args["deleted"] = DELETED_STAGE
    found = {int(v) for (v,) in conn.execute(sa.text(_CHANGED), args)} - old.deleted
    carded = {int(v) for (v,) in conn.execute(sa.text(_DONE), args)}
    return found | (carded - old.done)
