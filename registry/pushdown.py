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

Anything unusual (no feasible version in the first pages, a winner whose artifact is gone, a value PostgreSQL
cannot cast) returns None and the caller loads the index, which is always right, only slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, cost_term, judge, rank_key

DIALECTS = ("postgresql", "sqlite")
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

    def __init__(self, dialect: str, model_name: str, k: Constraints, workspace: str, deleted_stage: str) -> None:
        self.k, self.cast = k, _CAST[dialect]
        self.args: dict[str, Any] = {"ws": workspace, "name": model_name, "deleted": deleted_stage, "fp": k.fingerprint}
        self.columns: dict[str, str] = {}  # tag key -> column alias in the pivot
        self.point: list[str] = []  # at the operating point and usable
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
        key = names.metric_tag(metric)
        if key not in self.columns:
            self.columns[key] = f"m{len(self.columns)}"
        return self.columns[key]

    def num(self, metric: str) -> str:
        return f"CAST(t.{self.col(metric)} AS {self.cast})"

    def _point(self) -> None:
        k, a = self.k, self._arg
        self.point += [
            f"t.status = {a('ok', names.STATUS_OK)}",
            "t.run_id <> ''",
            f"t.runner = {a('runner', k.target)}",
            f"t.precision = {a('precision', k.effective_precision)}",
            f"COALESCE(NULLIF(t.batch, ''), '1') = {a('batch', str(k.batch_size))}",
        ]
        if k.threads is not None:
            self.point.append(f"COALESCE(NULLIF(t.threads, ''), 'all') = {a('threads', str(k.threads))}")

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
            self.budgets.append(f"t.{self.col(needed)} IS NOT NULL")
        if k.families is not None:
            fams = ", ".join(a("fam", f) for f in k.families)
            self.budgets.append(f"t.family IN ({fams})")

    def sql(self) -> str:
        pivot = ",\n    ".join(f"MAX(CASE WHEN key = {a} THEN value END) AS {alias}" for alias, a in self.pivot.items())
        keys = ", ".join(self.pivot.values())
        fp = ":fp" if self.k.fingerprint is not None else "(SELECT fp FROM newest)"
        return f"""
WITH t AS (
  SELECT version,
    {pivot}
  FROM model_version_tags
  WHERE workspace = :ws AND name = :name AND key IN ({keys})
  GROUP BY version
), p AS (
  SELECT t.*, COALESCE(t.fingerprint, '') AS fp, COALESCE(mv.creation_time, 0) AS created
  FROM t JOIN model_versions mv ON mv.workspace = :ws AND mv.name = :name AND mv.version = t.version
  WHERE mv.status = 'READY' AND COALESCE(mv.current_stage, '') <> :deleted AND {" AND ".join(self.point)}
), newest AS (
  SELECT fp FROM p ORDER BY created DESC, version DESC LIMIT 1
), f AS (
  SELECT version, {self.objective} AS obj FROM p AS t
  WHERE t.fp = {fp} AND {" AND ".join(self.budgets)}
)
SELECT version, obj FROM f ORDER BY (obj IS NULL), obj, version LIMIT :limit OFFSET :offset
"""


def best(
    conn: Any,
    dialect: str,
    model_name: str,
    k: Constraints,
    read: Callable[[Any, list[int]], dict[int, Candidate]],
    artifact_ok: Callable[[Candidate], bool],
    workspace: str,
    deleted_stage: str,
) -> tuple[Candidate, Verdict] | None:
    """The best feasible candidate for ``k`` whose artifact is there, or None when the caller must load the index.

    ``read(conn, versions)`` returns those versions' usable candidates, built as the index builds them.
    """
    import sqlalchemy as sa

    q = Query(dialect, model_name, k, workspace, deleted_stage)
    text = sa.text(q.sql())
    key = rank_key(k)
    winner: tuple[Any, Verdict] | None = None  # (rank key, verdict)
    for page in range(MAX_PAGES):
        rows = conn.execute(text, {**q.args, "limit": PAGE, "offset": page * PAGE}).all()
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
        if len(rows) < PAGE:  # every row read
            return _settle(winner[1], artifact_ok) if winner is not None else None
    return None  # not settled within the pages read: the index decides


def _beyond(floor: float, best_objective: float) -> bool:
    """No row whose SQL objective is ``floor`` (+inf for NULL, a missing metric) can rank before ``best_objective``."""
    if math.isnan(floor) or not math.isfinite(best_objective):
        return False
    return floor > best_objective + 1e-9 * max(1.0, abs(best_objective))


def _settle(verdict: Verdict, artifact_ok: Callable[[Candidate], bool]) -> tuple[Candidate, Verdict] | None:
    return (verdict.candidate, verdict) if artifact_ok(verdict.candidate) else None
