"""A cold ``get_best`` answered in the store: the best feasible version without loading the whole index.

A full index load builds every version of the registered model (about 0.8 s for 10,000); one answer needs only the
best feasible candidate. The store does the coarse work in one query: the versions usable at the constraints'
operating point, on the target fingerprint (the declared one, else the newest measured there), that no budget
rules out for sure, in the objective's order, a page at a time. Python reads each page's versions in full and judges
them with the same ``judge`` and ``rank_key`` as the index, and stops once no unread version can rank first.

Why the answer is the index's answer:

- every filter in SQL is implied by feasibility (a superset): a bound *or* its point estimate within budget, the
  required metrics present, parity 1, the family allowed; the exact verdict is always Python's;
- the SQL objective never exceeds the exact one (``objective_floor``): finite values parse the same on both sides,
  and a value Python cannot use costs +inf there (SQLite reads 'nan' or 'inf' as 0: lower, still a floor);
  so once the next row's SQL objective is above the best feasible one's exact objective, nothing unread beats it.

Where the rows come from, fastest first (``cold``, ``cold_card`` and ``cold_pivot`` in the get_best benchmark):

- ``table``: on PostgreSQL, cnnselect's own table (:mod:`registry.table`), one row of typed columns per version,
  usability decided when the row was written: a scan, no tag parsed, no join;
- ``card``: where the table cannot be used (a read-only role, another process updating it) and every fully logged
  version has its card (``names.TAG_CARD``): one tag row per version, its fields cut out with ``split_part`` and the
  operating point a prefix test, joined with ``model_versions``;
- ``pivot``: elsewhere (SQLite, or versions registered before cards): some 15 key-value rows per version, grouped.

Each is a coarse filter only: the table and the cards are written from the same tags the verdict reads, and one that
disagreed with them could only let through a version Python then rejects, or hide one whose tags were edited by hand
after registration (cnnselect never edits them; ``cnnselect add-cards`` writes the cards again from the tags and
has the table rebuilt).

Anything unusual (no feasible version in the first pages, a winner whose artifact is gone, a value PostgreSQL
cannot cast) returns None and the caller loads the index, which is always right, only slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from registry import names, table
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, cost_term, judge, rank_key

DIALECTS = ("postgresql", "sqlite")
SOURCES = ("table", "card", "pivot")  # fastest first
CARD_DIALECTS = ("postgresql",)  # split_part and starts_with; SQLite has neither and keeps the pivot
PAGE = 32
MAX_PAGES = 4
_CAST = {"postgresql": "DOUBLE PRECISION", "sqlite": "REAL"}


def objective_terms(k: Constraints) -> list[tuple[float, str, float]]:
    """(weight, metric, sign) of the objective's figure, as ``rank_key`` sums them."""
    if k.objective == "weighted":
        return [(w, *cost_term(m, k)) for m, w in (k.weights or {}).items() if w]
    return [(1.0, *cost_term(k.objective, k))]


class Query:
    """The SQL for one constraints set: tag names bound as parameters, never spliced into the text."""

    def __init__(
        self, dialect: str, model_name: str, k: Constraints, workspace: str, deleted_stage: str, source: str = "pivot"
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        self.k, self.cast, self.source = k, _CAST[dialect], source
        self.card, self.typed = source == "card", source == "table"
        self.args: dict[str, Any] = {"ws": workspace, "name": model_name, "deleted": deleted_stage, "fp": k.fingerprint}
        self.columns: dict[str, str] = {}  # tag key -> column alias in the pivot
        self.point: list[str] = []  # at the operating point and usable
        self.card_point = ""  # the same, on the card's row (card mode)
        self.budgets: list[str] = []  # what feasibility implies
        ident = {
            "runner": names.TAG_RUNNER,
            "precision": names.TAG_PRECISION,
            "batch": names.TAG_BATCH_SIZE,
            "threads": names.TAG_THREADS,
            "status": names.TAG_STATUS,
            "run_id": names.TAG_RUN_ID,
            "fingerprint": names.TAG_FINGERPRINT,
            "family": names.TAG_FAMILY,
        }
        for alias, key in ident.items():
            self.columns[key] = alias
        self._point()
        self._budgets()
        self.objective = " + ".join(
            f"{self._arg('w', w)} * ({self._arg('s', sign)} * {self.num(m)})" for w, m, sign in objective_terms(k)
        )
        self.pivot = {alias: self._arg("k", key) for key, alias in self.columns.items()}

    def _arg(self, stem: str, value: Any) -> str:
        name = f"{stem}{len(self.args)}"
        self.args[name] = value
        return f":{name}"

    def col(self, metric: str) -> str:
        """The metric's value (text, NULL when missing) in the rows of ``p``."""
        key = names.metric_tag(metric)
        if key not in self.columns:
            self.columns[key] = f"m{len(self.columns)}"
        if self.typed:
            return f"t.{table.column(metric)}" if metric in table.METRICS else "NULL"
        if self.card:  # cut from the card where it is read: a row an earlier test rejects never parses the rest
            return _card_field(metric) if metric in names.CARD_METRICS else "NULL"
        return f"t.{self.columns[key]}"

    def num(self, metric: str) -> str:
        value = self.col(metric)
        return value if self.typed else f"CAST({value} AS {self.cast})"

    def _point(self) -> None:
        k, a = self.k, self._arg
        if self.card:  # one prefix test on the card's first field (see names.card_point)
            point = names.card_point(k.target, k.effective_precision, k.batch_size, "")
            full = f"{point}{k.threads} " if k.threads is not None else point
            self.card_point = f"starts_with(value, {a('point', full)})"
            return
        if self.typed:  # usable (READY, not deleted, fully logged, ok) was decided when the row was written
            usable, batch, threads = ["t.usable"], "t.batch", "t.threads"
        else:
            usable = [f"t.status = {a('ok', names.STATUS_OK)}", "t.run_id <> ''"]
            batch, threads = "COALESCE(NULLIF(t.batch, ''), '1')", "COALESCE(NULLIF(t.threads, ''), 'all')"
        self.point += [
            *usable,
            f"t.runner = {a('runner', k.target)}",
            f"t.precision = {a('precision', k.effective_precision)}",
            f"{batch} = {a('batch', k.batch_size if self.typed else str(k.batch_size))}",
        ]
        if k.threads is not None:
            self.point.append(f"{threads} = {a('threads', str(k.threads))}")

    def _budgets(self) -> None:
        """Feasibility's necessary conditions (see the module docstring), each a SQL predicate."""
        k, a, n = self.k, self._arg, self.num
        p = k.latency_percentile
        within = [
            ("upper", k.max_latency_ms, f"latency_p{p}_ms", f"latency_p{p}_ub_ms"),
            ("upper", k.max_params_m, "params_m", None),
            ("upper", k.max_size_mb, "size_mb", None),
            ("upper", k.max_gmacs, "gmacs", None),
            ("upper", k.max_peak_memory_mb, "memory_rss_mb", None),
            ("lower", k.min_top1, "top1", "top1_ci_low"),
            ("upper", k.max_top1_drop, "top1_drop_vs_fp32", None),
        ]
        for side, limit, point, bound in within:
            if limit is None:
                continue
            op, lim = ("<=" if side == "upper" else ">="), a("lim", float(limit))
            test = f"{n(point)} {op} {lim}"
            self.budgets.append(f"({n(bound)} {op} {lim} OR {test})" if bound else test)
        self.budgets.append(f"{n('onnx_parity_ok')} = 1")
        for needed in ("top1", k.latency_metric, "size_mb"):
            self.budgets.append(f"{self.col(needed)} IS NOT NULL")
        if k.families is not None:
            fams = ", ".join(a("fam", f) for f in k.families)
            family = _card_field("family") if self.card else "t.family"
            self.budgets.append(f"{family} IN ({fams})")

    @property
    def fits_card(self) -> bool:
        """Every tag this query reads is on the card (and so in cnnselect's table: :mod:`registry.table`)."""
        on_card = {names.TAG_FINGERPRINT, names.TAG_FAMILY, *map(names.metric_tag, names.CARD_METRICS)}
        point = {names.TAG_RUNNER, names.TAG_PRECISION, names.TAG_BATCH_SIZE, names.TAG_THREADS}
        usable = {names.TAG_STATUS, names.TAG_RUN_ID}  # not filtered on the card: Python judges the status
        return all(key in on_card | point | usable for key in self.columns)

    def sql(self) -> str:
        if self.typed:
            return self._typed_sql()
        fp = ":fp" if self.k.fingerprint is not None else "(SELECT fp FROM newest)"
        if self.card:  # a card is only written with the run id; the status is left to Python (a superset)
            self.args["card"] = names.TAG_CARD
            t = f"""SELECT version, value AS card, NULLIF(split_part(value, ' ', 2), '-') AS fingerprint
  FROM model_version_tags
  WHERE workspace = :ws AND name = :name AND key = :card AND {self.card_point}"""
        else:
            pivot = ",\n    ".join(
                f"MAX(CASE WHEN key = {a} THEN value END) AS {alias}" for alias, a in self.pivot.items()
            )
            t = f"""SELECT version,
    {pivot}
  FROM model_version_tags
  WHERE workspace = :ws AND name = :name AND key IN ({", ".join(self.pivot.values())})
  GROUP BY version"""
        return f"""
WITH t AS (
  {t}
), p AS (
  SELECT t.*, COALESCE(t.fingerprint, '') AS fp, COALESCE(mv.creation_time, 0) AS created
  FROM t JOIN model_versions mv ON mv.workspace = :ws AND mv.name = :name AND mv.version = t.version
  WHERE {" AND ".join(["mv.status = 'READY'", "COALESCE(mv.current_stage, '') <> :deleted", *self.point])}
), newest AS (
  SELECT fp FROM p ORDER BY created DESC, version DESC LIMIT 1
), f AS (
  SELECT version, {self.objective} AS obj FROM p AS t
  WHERE t.fp = {fp} AND {" AND ".join(self.budgets)}
)
SELECT version, obj FROM f ORDER BY (obj IS NULL), obj, version LIMIT :limit OFFSET :offset
"""

    def _typed_sql(self) -> str:
        """One scan of typed columns (:mod:`registry.table`): no tag parsed, no join."""
        here = f"t.workspace = :ws AND t.name = :name AND {' AND '.join(self.point)}"
        order = "ORDER BY t.created DESC, t.version DESC LIMIT 1"
        newest = f"(SELECT t.fingerprint FROM {table.NAME} t WHERE {here} {order})"
        fp = ":fp" if self.k.fingerprint is not None else newest
        return f"""
SELECT version, obj FROM (
  SELECT t.version, {self.objective} AS obj FROM {table.NAME} t
  WHERE {here} AND t.fingerprint = {fp} AND {" AND ".join(self.budgets)}
) f ORDER BY (obj IS NULL), obj, version LIMIT :limit OFFSET :offset
"""


def _card_field(field: str) -> str:
    """A field of the card in ``p`` (``split_part`` counts from 1; "-" is none)."""
    return f"NULLIF(split_part(t.card, ' ', {names.CARD_FIELDS.index(field) + 1}), '-')"


def best(
    conn: Any,
    dialect: str,
    model_name: str,
    k: Constraints,
    read: Callable[[Any, list[int]], dict[int, Candidate]],
    artifact_ok: Callable[[Candidate], bool],
    workspace: str,
    deleted_stage: str,
    used: dict[str, int] | None = None,
    carded: bool | None = None,
    typed: bool = False,
) -> tuple[Candidate, Verdict] | None:
    """The best feasible candidate for ``k`` whose artifact is there, or None when the caller must load the index.

    ``read(conn, versions)`` returns those versions' usable candidates, built as the index builds them. ``used``
    counts the queries by source: ``table`` (cnnselect's typed rows), ``card`` (one card per version) or ``pivot``
    (the version's tags, key by key). ``typed``: cnnselect's table is up to date for this model
    (:mod:`registry.table`). ``carded`` says whether every fully logged version has its card; None: asked here
    (:func:`all_carded`).
    """
    import sqlalchemy as sa

    q = Query(dialect, model_name, k, workspace, deleted_stage)
    if typed and q.fits_card:
        q = Query(dialect, model_name, k, workspace, deleted_stage, "table")
    elif (
        dialect in CARD_DIALECTS
        and q.fits_card
        and (carded if carded is not None else all_carded(conn, model_name, workspace))
    ):
        q = Query(dialect, model_name, k, workspace, deleted_stage, "card")
    if used is not None:
        used[q.source] = used.get(q.source, 0) + 1
    text = sa.text(q.sql())
    key = rank_key(k)
    winner: tuple[Any, Verdict] | None = None  # (rank key, verdict)
    first = max(1, PAGE // 4)  # a short first page: the best rows nearly always settle it, and each costs a read
    for page in range(MAX_PAGES):
        size, offset = (first, 0) if page == 0 else (PAGE, first + (page - 1) * PAGE)
        rows = conn.execute(text, {**q.args, "limit": size, "offset": offset}).all()
        built = read(conn, [int(v) for v, _ in rows]) if rows else {}
        for version, floor in rows:
            if winner is not None and _beyond(math.inf if floor is None else float(floor), winner[0][0][0]):
                return _settle(winner[1], artifact_ok)
            c = built.get(int(version))
            if c is None:
                continue
            v = judge(c, k)
            if v.label == "feasible" and (winner is None or key(c) < winner[0]):
                winner = (key(c), v)
        if len(rows) < size:  # every row read
            return _settle(winner[1], artifact_ok) if winner is not None else None
    return None  # not settled within the pages read: the index decides


_UNCARDED = """
SELECT count(*) FROM model_version_tags r
WHERE r.workspace = :ws AND r.key = :done AND r.name = :name AND NOT EXISTS (
  SELECT 1 FROM model_version_tags c
  WHERE c.workspace = :ws AND c.key = :card AND c.name = :name AND c.version = r.version
)
"""


def all_carded(conn: Any, model_name: str, workspace: str) -> bool:
    """Every fully logged version has a card (versions registered before cards existed do not)."""
    import sqlalchemy as sa

    args = {"ws": workspace, "name": model_name, "done": names.TAG_RUN_ID, "card": names.TAG_CARD}
    return int(conn.execute(sa.text(_UNCARDED), args).scalar_one()) == 0


def _beyond(floor: float, best_objective: float) -> bool:
    """No row whose SQL objective is ``floor`` (+inf for NULL, a missing metric) can rank before ``best_objective``."""
    if math.isnan(floor) or not math.isfinite(best_objective):
        return False
    return floor > best_objective + 1e-9 * max(1.0, abs(best_objective))


def _settle(verdict: Verdict, artifact_ok: Callable[[Candidate], bool]) -> tuple[Candidate, Verdict] | None:
    return (verdict.candidate, verdict) if artifact_ok(verdict.candidate) else None
