"""cnnselect's own table of candidates beside MLflow's, so a cold ``get_best`` on PostgreSQL reads typed columns.

MLflow keeps a version's figures as text: cnnselect's card tag, one per version (``names.TAG_CARD``). Computed in
the store, a cold ``get_best`` must then cut fields out of each card and join ``model_versions`` for the status and
creation time (:mod:`registry.pushdown`): it parses text for thousands of versions on every call. This table holds
one row per version with those fields already typed: the operating point, fingerprint, host, family, creation time, a
``usable`` flag (READY, not deleted, fully logged, evaluation ok, card readable), and the card's metrics as
``DOUBLE PRECISION`` (NULL where the card has none). Its rows are built by the index's own reader
(``CandidateIndex._read_sql``, ``candidate_from_tags``), so they say what the index would say.

It follows MLflow's tables under the index's watermark (the registered model's last update, highest version, count of
versions carrying their card): ``<table>_sync`` records the watermark its rows reflect. A reader that finds it behind
brings it up to date, in one REPEATABLE READ transaction (the watermark and the versions read in one snapshot) under
a transaction-scoped advisory lock. Only the versions that changed are read again, found as the index finds them
for a delta: numbered above the highest seen, deleted since, updated since, or given their card since. Another
registered model under the same name (told by its creation time) is rebuilt, not patched. A reader never waits: when
another process holds the lock, it answers from MLflow's tables this once.

Like the index between full reloads, it does not see a card edited by hand on an existing version (MLflow moves no
timestamp for a tag): ``cnnselect add-cards`` puts the cards back from the runs and rebuilds the model's rows. Where
the table cannot be created or written (a read-only role), answers come from MLflow's tables as before, only slower.
The table is only a coarse filter either way: every answer is judged on the candidates the index builds from the
versions' cards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from registry import names

if TYPE_CHECKING:
    from registry.index import Rows

DIALECTS = ("postgresql",)  # advisory locks, REPEATABLE READ snapshots; SQLite reads the cards
# a new layout gets a new name: an old table is never misread (v2: card v2's metrics; "done" means carded; v3: the
# card's host id)
NAME = "cnnselect_candidates_v3"
SYNC = f"{NAME}_sync"
LOCK = f"{NAME}/lock"
METRICS = names.CARD_METRICS


def column(metric: str) -> str:
    return f"m_{metric}"


@functools.cache  # built once per process: every update uses them
def _tables() -> tuple[Any, Any, Any]:
    import sqlalchemy as sa

    meta = sa.MetaData()
    rows = sa.Table(
        NAME,
        meta,
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("usable", sa.Boolean, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),  # the card is there (written with the version)
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("runner", sa.Text),
        sa.Column("precision", sa.Text),
        sa.Column("batch", sa.Integer),
        sa.Column("threads", sa.Text),
        sa.Column("fingerprint", sa.Text),
        sa.Column("host", sa.Text),
        sa.Column("family", sa.Text),
        sa.Column("created", sa.BigInteger),
        *(sa.Column(column(m), sa.Float(precision=53)) for m in METRICS),
    )
    sa.Index(
        f"{NAME}_point",
        rows.c.workspace,
        rows.c.name,
        rows.c.runner,
        rows.c.precision,
        rows.c.batch,
        rows.c.created,
        postgresql_where=rows.c.usable,
    )
    sync = sa.Table(
        SYNC,
        meta,
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("mark", sa.Text, nullable=False),  # the watermark the rows reflect (see ``mark``)
        sa.Column("top", sa.Integer, nullable=False),  # highest version read
        sa.Column("since", sa.BigInteger, nullable=False),  # newest last_updated_time read
        sa.Column("born", sa.BigInteger),  # the registered model's creation_time: another one under the same name
    )
    return meta, rows, sync


def mark(watermark: Hashable) -> str | None:
    """What of the index's watermark the rows follow: last update, highest version, versions carrying their card."""
    if isinstance(watermark, tuple) and len(watermark) >= 3:
        return "/".join(str(x) for x in watermark[:3])
    return None


_MARK = f"SELECT mark FROM {SYNC} WHERE workspace = :ws AND name = :name"


def current(conn: Any, model_name: str, workspace: str) -> str | None:
    """The watermark the model's rows reflect; None when the table or the model's rows are not there."""
    import sqlalchemy as sa

    if not _exists(conn):
        return None
    value = conn.execute(sa.text(_MARK), {"ws": workspace, "name": model_name}).scalar()
    return None if value is None else str(value)


def _exists(conn: Any) -> bool:
    import sqlalchemy as sa

    return conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": SYNC}).scalar() is not None


_BORN = "SELECT creation_time FROM registered_models WHERE workspace = :ws AND name = :name"
_CHANGED = f"""
SELECT mv.version FROM model_versions mv
WHERE mv.workspace = :ws AND mv.name = :name
  AND (mv.version > :top OR mv.last_updated_time > :since OR mv.current_stage = :deleted)
  AND NOT EXISTS (
    SELECT 1 FROM {NAME} c WHERE c.workspace = :ws AND c.name = :name AND c.version = mv.version AND c.deleted)
UNION
SELECT c.version FROM {NAME} c
WHERE c.workspace = :ws AND c.name = :name AND NOT c.done AND NOT c.deleted AND EXISTS (
  SELECT 1 FROM model_version_tags t
  WHERE t.workspace = :ws AND t.name = :name AND t.version = c.version AND t.key = :done)
"""


def sync(
    engine: Any,
    model_name: str,
    workspace: str,
    deleted_stage: str,
    watermark: Callable[[Any], Hashable],
    read: Callable[[Any, list[int] | None], Rows],
    max_delta: int,
) -> tuple[str, int] | None:
    """Bring the model's rows up to MLflow's tables; None when another process holds the lock.

    Returns the watermark the rows now reflect and how many versions were written. On None the caller reads
    MLflow's tables this once.

    ``watermark(conn)`` and ``read(conn, versions or None for all)`` are the index's, run in this transaction.
    """
    import sqlalchemy as sa

    meta, rows_t, sync_t = _tables()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            lock = sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))")
            if not conn.execute(lock, {"k": LOCK}).scalar():
                return None
            meta.create_all(conn, checkfirst=True)  # under the lock: two first readers never race on CREATE
            wm = watermark(conn)
            want = mark(wm)
            if want is None:
                raise ValueError(f"unexpected watermark {wm!r}")
            ws = {"ws": workspace, "name": model_name}
            held = conn.execute(
                sa.select(sync_t.c.mark, sync_t.c.top, sync_t.c.since, sync_t.c.born).where(
                    sync_t.c.workspace == workspace, sync_t.c.name == model_name
                )
            ).one_or_none()
            if held is not None and held.mark == want:
                return want, 0
            born = conn.execute(sa.text(_BORN), ws).scalar()
            changed: list[int] | None = None
            if held is not None and held.born == born:  # else the model was deleted and made again: rebuild
                args = {**ws, "top": held.top, "since": held.since, "deleted": deleted_stage, "done": names.TAG_CARD}
                changed = sorted(int(v) for (v,) in conn.execute(sa.text(_CHANGED), args))
                if len(changed) > max_delta:
                    changed = None
            mine = (rows_t.c.workspace == workspace) & (rows_t.c.name == model_name)
            if changed is None:
                conn.execute(rows_t.delete().where(mine))
                fresh = read(conn, None)
            elif changed:
                conn.execute(rows_t.delete().where(mine & rows_t.c.version.in_(changed)))
                fresh = read(conn, changed)
            else:
                fresh = None
            values = _values(fresh, workspace, model_name) if fresh is not None else []
            if values:
                conn.execute(rows_t.insert(), values)
            if changed is None:  # the planner's statistics for a table just filled (autovacuum would, later)
                conn.execute(sa.text(f"ANALYZE {NAME}"))
            keep = changed is not None and held is not None
            state = {
                "mark": want,
                "born": born,
                "top": max(held.top if keep else 0, fresh.top if fresh else 0),  # type: ignore[union-attr]
                "since": max(held.since if keep else 0, fresh.max_updated if fresh else 0),  # type: ignore[union-attr]
            }
            if held is None:
                conn.execute(sync_t.insert(), {"workspace": workspace, "name": model_name, **state})
            else:
                conn.execute(sync_t.update().where(sync_t.c.workspace == workspace, sync_t.c.name == model_name), state)
            return want, len(values)


def _values(fresh: Rows, workspace: str, model_name: str) -> list[dict[str, Any]]:
    out = []
    for v in sorted(fresh.done | fresh.pending | fresh.deleted):
        row: dict[str, Any] = {
            "workspace": workspace,
            "name": model_name,
            "version": v,
            "done": v in fresh.done,
            "deleted": v in fresh.deleted,
        }
        c = fresh.by_version.get(v)
        row["usable"] = c is not None
        row.update(runner=None, precision=None, batch=None, threads=None, fingerprint=None, family=None, created=None)
        row["host"] = None
        row.update({column(m): None for m in METRICS})
        if c is not None:
            row.update(
                runner=c.runner,
                precision=c.precision,
                batch=c.batch_size if abs(c.batch_size) < 2**31 else -1,  # an absurd tag never fails the write
                threads=c.threads,
                fingerprint=c.fingerprint,
                host=c.host,
                family=c.family,
                created=c.created_ms,
            )
            row.update({column(m): c.metrics.get(m) for m in METRICS})
        out.append(row)
    return out


def forget(engine: Any, model_name: str, workspace: str) -> bool:
    """Drop the model's rows, so the next reader rebuilds them from MLflow's tables (after tags edited by hand).

    False when there is no table.
    """
    import sqlalchemy as sa

    _, rows_t, sync_t = _tables()
    with engine.begin() as conn:
        if not _exists(conn):
            return False
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": LOCK})
        for t in (sync_t, rows_t):
            conn.execute(t.delete().where(t.c.workspace == workspace, t.c.name == model_name))
    return True
