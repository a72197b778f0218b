"""A cold ``get_best`` answered in the store: the best feasible version without loading the whole index.

A full index load builds every version of the registered model (about 0.8 s for 10,000); one answer needs only the
best feasible candidate. The store does the coarse work in one query: the versions usable at the constraints'
operating point, on the target fingerprint (the declared one, else the newest measured there), that no budget
rules out for sure, in the objective's order, a page at a time. Python reads each page's versions in full and judges
them with the same ``judge`` and ``rank_key`` as the index, and stops once no unread version can rank first.

Why the answer is the index's answer:

- every filter in SQL is implied by feasibility (a superset): a bound *or* its point estimate within budget, the
  required metrics present, parity 1, the family allowed; the exact verdict is always Python's;
- the SQL objective never exceeds the exact one: a candidate's card holds each figure as ``repr(float)``, which
  both sides read back as the same number (SQLite, rarely, one ulp off: within the stopping rule's tolerance), and a
  missing one ("-") is NULL there, ordered last as Python's +inf; so once the next row's SQL objective is above the
  best feasible one's exact objective, nothing unread beats it.

The rows are MLflow's own (:mod:`registry.stores.mlflow_tables`, read only): the one card tag per version
(``names.TAG_CARD``), its fields cut out with ``split_part`` (registered on each SQLite connection) and the operating
point a prefix test, joined with ``model_versions``. The card is the only place a version's figures are read from, by
the index as here (``names.read_card``, strict: a card Python cannot read exactly is no candidate, whatever SQL makes
of it).

Anything unusual (no feasible version in the first pages, a value PostgreSQL cannot cast) returns None and the
caller loads the index, which is always right, only slower; so does a winner whose artifact is gone, which the caller
checks. Where every row was read, :func:`settle` says so (:class:`Settled`, its value None when nothing is
feasible).

A host target (``registry.hosts``) is one query over several runners' points: the machine is the newest card there
with a host id (unless pinned), checked in Python as the index would find it; each runner is on its own newest
fingerprint on that machine; the rows of every runner are ordered together by the objective, which does not depend on
the runner, so the stopping rule holds over their union.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, cost_term, judge, rank_key
from registry.stores import mlflow_tables as mt

T = TypeVar("T")


@dataclass(frozen=True)
class Settled(Generic[T]):
    """What the store settled for certain, every row read: ``value``, or None when there is none."""

    value: T | None


DIALECTS = ("postgresql", "sqlite")
PAGE = 32
MAX_PAGES = 4
_CAST = {"postgresql": "DOUBLE PRECISION", "sqlite": "REAL"}
_FIND = {"postgresql": "strpos", "sqlite": "instr"}  # the position of a substring


def objective_terms(k: Constraints) -> list[tuple[float, str, float]]:
    """(weight, metric, sign) of the objective's figure, as ``rank_key`` sums them."""
    if k.objective == "weighted":
        return [(w, *cost_term(m, k)) for m, w in (k.weights or {}).items() if w]
    return [(1.0, *cost_term(k.objective, k))]


class Query:
    """The SQL for one constraints set: every value bound as a parameter, never spliced into the text.

    ``points``: the runner targets whose pools are ranked together (a host target's, ``registry.hosts``: the same
    batch, threads and host, each runner on its own newest fingerprint); default ``[k]``. ``k`` gives the budgets and
    the objective, which do not depend on the runner.
    """

    def __init__(
        self,
        dialect: str,
        model_name: str,
        k: Constraints,
        points: list[Constraints] | None = None,
    ) -> None:
        self.k, self.cast = k, _CAST[dialect]
        self.find = _FIND[dialect]
        self.points = points or [k]
        self.many = points is not None  # a host target's, even of one runner: its machine found here
        self.args: dict[str, Any] = {"ws": mt.WORKSPACE, "name": model_name, "deleted": mt.DELETED_STAGE}
        self.args["fp"] = k.fingerprint
        self.point: list[str] = []  # at one of several operating points (a host target's)
        self.budgets: list[str] = []  # what feasibility implies
        self._point()
        self._budgets()
        self.objective = " + ".join(
            f"{self._arg('w', w)} * ({self._arg('s', sign)} * {self.num(m)})" for w, m, sign in objective_terms(k)
        )

    def _arg(self, stem: str, value: Any) -> str:
        name = f"{stem}{len(self.args)}"
        self.args[name] = value
        return f":{name}"

    def col(self, metric: str) -> str:
        """The metric's value (NULL when missing) in the rows of ``p``, as text."""
        # cut from the card where it is read: a row an earlier test rejects never parses the rest
        return _card_field(metric) if metric in names.CARD_METRICS else "NULL"

    def num(self, metric: str) -> str:
        value = self.col(metric)
        return f"CAST({value} AS {self.cast})"

    def _point(self) -> None:
        """One prefix test on the card's first field (see ``names.card_point``); for several points, one per point."""
        if not self.many:
            self.args["point"] = point_prefix(self.k)
            return
        tests = []
        for s in self.points:
            prefix = self._arg("point", point_prefix(s))
            tests.append(f"substr(value, 1, length({prefix})) = {prefix}")
        self.point.append(f"({' OR '.join(tests)})")

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
            self.budgets.append(f"{_card_field('family')} IN ({fams})")

    def sql(self) -> str:
        return self._card_sql()

    def _card_sql(self) -> str:
        """The cards at the operating point joined with their versions; the status is left to Python (a superset)."""
        self.args["card"] = names.TAG_CARD
        if self.many:
            return self._card_many_sql()
        fp = ":fp" if self.k.fingerprint is not None else "(SELECT fp FROM newest)"
        return f"""
WITH t AS (
  SELECT version, value AS card, NULLIF(split_part(value, ' ', 2), '-') AS fingerprint
  FROM {mt.TAGS}
  WHERE workspace = :ws AND name = :name AND key = :card AND substr(value, 1, length(:point)) = :point {self._pinned()}
), p AS (
  SELECT t.*, COALESCE(t.fingerprint, '') AS fp, COALESCE(mv.creation_time, 0) AS created
  FROM t JOIN {mt.VERSIONS} mv ON mv.workspace = :ws AND mv.name = :name AND mv.version = t.version
  WHERE mv.status = 'READY' AND COALESCE(mv.current_stage, '') <> :deleted
), newest AS (
  SELECT fp FROM p ORDER BY created DESC, version DESC LIMIT 1
), f AS (
  SELECT version, {self.objective} AS obj FROM p AS t
  WHERE t.fp = {fp} AND {" AND ".join(self.budgets)}
)
SELECT version, obj FROM f ORDER BY (obj IS NULL), obj, version LIMIT :limit OFFSET :offset
"""

    def _pinned(self) -> str:
        """The card ends with the pinned host id (its last field), tested without cutting the card."""
        host = self.points[0].host
        if host is None:
            return ""
        self.args["hostsp"] = f" {host}"
        return "AND substr(value, length(value) - length(:hostsp) + 1) = :hostsp"

    @property
    def finds_host(self) -> bool:
        """A host target's machine is found in the same query: the newest card with a host id at its points."""
        return self.many and self.points[0].host is None

    def _card_many_sql(self) -> str:
        """Several runners' cards ranked together, each on its newest fingerprint, on one machine.

        When no host is pinned, ``h`` is the newest card at the points with a host id (and the pinned fingerprint):
        its machine is the one answered on, and its version comes back with each row for Python to check.
        ``newest`` is MATERIALIZED: SQLite otherwise runs its window again for every row it is joined with.
        """
        declared = self.k.fingerprint is not None
        runner = f"substr(value, 1, {self.find}(value, '/') - 1)"
        host, on_host, newest_col = "", "", ""
        if self.finds_host:
            host = f"""h AS (
  SELECT newest, split_part(card, ' ', {names.CARD_FIELDS.index("host") + 1}) AS host FROM (
    SELECT version AS newest, card FROM p
    WHERE substr(card, length(card) - 1) <> ' -' {"AND fp = :fp" if declared else ""}
    ORDER BY created DESC, version DESC LIMIT 1
  ) AS n
), """  # the card cut once, for the newest row only
            on_host = "AND substr(t.card, length(t.card) - length((SELECT host FROM h))) = ' ' || (SELECT host FROM h)"
            newest_col = ", (SELECT newest FROM h) AS newest"
        ranked = "row_number() OVER (PARTITION BY runner ORDER BY created DESC, version DESC)"
        pool = "FROM p AS t WHERE t.fp = :fp" if declared else (
            "FROM p AS t JOIN newest n ON n.runner = t.runner AND n.fp = t.fp WHERE 1 = 1"
        )  # fmt: skip
        return f"""
WITH t AS (
  SELECT version, value AS card, NULLIF(split_part(value, ' ', 2), '-') AS fingerprint, {runner} AS runner
  FROM {mt.TAGS}
  WHERE workspace = :ws AND name = :name AND key = :card AND {self.point[0]} {self._pinned()}
), p AS (
  SELECT t.*, COALESCE(t.fingerprint, '') AS fp, COALESCE(mv.creation_time, 0) AS created
  FROM t JOIN {mt.VERSIONS} mv ON mv.workspace = :ws AND mv.name = :name AND mv.version = t.version
  WHERE mv.status = 'READY' AND COALESCE(mv.current_stage, '') <> :deleted
), {host}newest AS MATERIALIZED (
  SELECT runner, fp FROM (SELECT runner, fp, {ranked} AS n FROM p AS t WHERE 1 = 1 {on_host}) AS r WHERE n = 1
), f AS (
  SELECT t.version AS version, {self.objective} AS obj {pool} {on_host} AND {" AND ".join(self.budgets)}
)
SELECT version, obj{newest_col} FROM f ORDER BY (obj IS NULL), obj, version LIMIT :limit OFFSET :offset
"""


def _card_field(field: str) -> str:
    """A field of the card in ``p`` (``split_part`` counts from 1; "-" is none)."""
    return f"NULLIF(split_part(t.card, ' ', {names.CARD_FIELDS.index(field) + 1}), '-')"


def point_prefix(k: Constraints) -> str:
    """What the card of a version at ``k``'s operating point starts with (the threads only when pinned)."""
    point = names.card_point(k.target, k.effective_precision, k.batch_size, "")
    return f"{point}{k.threads} " if k.threads is not None else point


def best(conn: Any, dialect: str, model_name: str, k: Constraints) -> tuple[Candidate, Verdict] | None:
    """The best feasible candidate for ``k``, or None when the caller must load the index (see :func:`settle`)."""
    got = settle(conn, dialect, model_name, k)
    return got.value if got is not None else None


def settle(
    conn: Any,
    dialect: str,
    model_name: str,
    k: Constraints,
    points: list[Constraints] | None = None,
    newest_ok: Callable[[Candidate], bool] | None = None,
) -> Settled[tuple[Candidate, Verdict]] | None:
    """:func:`best`, telling "nothing is feasible" (``Settled(None)``, every row read) from "not sure" (None).

    The rows' candidates are read as the index reads them (``mlflow_tables.read_rows``); the winner's artifact is the
    caller's to check. ``points``: several runner targets ranked together (see :class:`Query`). Where the query finds
    their machine (no host pinned), ``newest_ok`` must accept the candidate it was found from
    (``registry.hosts.on_host_point``: the index's own rule), else the answer is not sure.
    """
    import sqlalchemy as sa

    q = Query(dialect, model_name, k, points)
    text = sa.text(q.sql())
    key = rank_key(k)
    winner: tuple[Any, Verdict] | None = None  # (rank key, verdict)
    first = max(1, PAGE // 4)  # a short first page: the best rows nearly always settle it, and each costs a read
    for page in range(MAX_PAGES):
        size, offset = (first, 0) if page == 0 else (PAGE, first + (page - 1) * PAGE)
        rows = conn.execute(text, {**q.args, "limit": size, "offset": offset}).all()
        newest = [int(rows[0][2])] if q.finds_host and page == 0 and rows and rows[0][2] is not None else []
        built = mt.read_rows(conn, dialect, model_name, [int(r[0]) for r in rows] + newest).by_version if rows else {}
        if newest and (newest_ok is None or (c := built.get(newest[0])) is None or not newest_ok(c)):
            return None  # the store's newest card there is not the index's newest candidate: the index decides
        for version, floor, *_ in rows:
            if winner is not None and _beyond(math.inf if floor is None else float(floor), winner[0][0][0]):
                return Settled((winner[1].candidate, winner[1]))
            c = built.get(int(version))
            if c is None:
                continue
            v = judge(c, k)
            if v.label == "feasible" and (winner is None or key(c) < winner[0]):
                winner = (key(c), v)
        if len(rows) < size:  # every row read
            return Settled((winner[1].candidate, winner[1]) if winner is not None else None)
    return None  # not settled within the pages read: the index decides


def _beyond(floor: float, best_objective: float) -> bool:
    """No row whose SQL objective is ``floor`` (+inf for NULL, a missing metric) can rank before ``best_objective``."""
    if math.isnan(floor) or not math.isfinite(best_objective):
        return False
    return floor > best_objective + 1e-9 * max(1.0, abs(best_objective))
