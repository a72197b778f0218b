"""Pure selection: label every candidate feasible / marginal / infeasible against constraints, and rank.

No MLflow here: the same functions answer ``get_best`` and its brute-force oracle in the tests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from registry.constraints import Constraints
from registry.errors import NoCandidatesError, NoFeasibleModelError

Label = Literal["feasible", "marginal", "infeasible"]
BOUND_LEVEL = 0.95  # the confidence of the bounds evaluators log (top1_ci_low, latency_p*_ub_ms)


@dataclass(frozen=True)
class Candidate:
    """One registered model version with the measurements copied onto it."""

    model_name: str
    version: str
    run_id: str
    variant: str
    family: str
    runner: str
    precision: str
    fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    threads: str = "all"
    evaluator_version: str = ""
    created_ms: int = 0
    artifact_uri: str = field(default="", compare=False)  # where the version's files are (its storage location)
    host: str = ""  # hardware-only id of the measuring machine ("" for a card written without one)

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def metric(self, name: str) -> float:
        return self.metrics.get(name, math.nan)


@dataclass(frozen=True)
class Check:
    constraint: str
    metric: str
    value: float  # the figure compared (a confidence bound where one exists)
    point: float  # the point estimate
    limit: float
    passed: bool  # the bound meets the limit
    point_passed: bool  # the point estimate meets the limit
    margin: float  # relative, positive = room left, negative = short by
    text: str = ""  # a check on a category (family, precision, parity) says what it saw in words, not figures

    def describe(self) -> str:
        """One clause: the figure compared, named as a bound when it is one, against the limit.

        ``min_top1: top1 ≥ 0.878 (95% lower bound; point 0.907) meets 0.8 (margin +9.8%)``.
        """
        if self.text:
            return f"{self.constraint}: {self.text}"
        if not math.isfinite(self.value):
            return f"{self.constraint}: {self.metric} not measured (or not finite)"
        verb = "meets" if self.passed else "fails"
        figure = f"{self.metric}={self.value:.4g}"
        if math.isfinite(self.point) and self.point != self.value:  # the budget was checked on the bound
            side, sign = ("lower", "≥") if self.value < self.point else ("upper", "≤")
            figure = f"{self.metric} {sign} {self.value:.4g} ({BOUND_LEVEL:.0%} {side} bound; point {self.point:.4g})"
        return f"{self.constraint}: {figure} {verb} {self.limit:.4g} (margin {self.margin:+.1%})"


@dataclass(frozen=True)
class Verdict:
    candidate: Candidate
    label: Label
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def describe(self) -> str:
        parts = "; ".join(c.describe() for c in (self.failed or self.checks)) or "no budget declared"
        return f"{self.candidate.variant} v{self.candidate.version} [{self.label}] {parts}"


def _check(name: str, metric: str, bound_metric: str | None, c: Candidate, limit: float, upper: bool) -> Check:
    point = c.metric(metric)
    value = c.metric(bound_metric) if bound_metric and math.isfinite(c.metric(bound_metric)) else point
    if not (math.isfinite(value) and math.isfinite(point)):
        return Check(name, metric, math.nan, point, limit, False, False, -math.inf)
    if upper:
        ok, pok, margin = value <= limit, point <= limit, (limit - value) / limit
    else:
        ok, pok, margin = value >= limit, point >= limit, (value - limit) / limit if limit else value
    return Check(name, metric, value, point, limit, ok, pok, margin)


def _member(name: str, what: str, value: str, allowed: tuple[str, ...]) -> Check:
    ok = value in allowed
    said = f"{what} {value} is {'' if ok else 'not '}allowed ({', '.join(allowed)})"
    return Check(name, what, 0.0, 0.0, 0.0, ok, ok, 0.0 if ok else -1.0, said)


def judge(c: Candidate, k: Constraints) -> Verdict:
    checks: list[Check] = []
    p = k.latency_percentile
    if k.max_latency_ms is not None:
        checks.append(_check("max_latency_ms", f"latency_p{p}_ms", f"latency_p{p}_ub_ms", c, k.max_latency_ms, True))
    if k.max_params_m is not None:
        checks.append(_check("max_params_m", "params_m", None, c, k.max_params_m, True))
    if k.max_size_mb is not None:
        checks.append(_check("max_size_mb", "size_mb", None, c, k.max_size_mb, True))
    if k.max_gmacs is not None:
        checks.append(_check("max_gmacs", "gmacs", None, c, k.max_gmacs, True))
    if k.min_top1 is not None:
        checks.append(_check("min_top1", "top1", "top1_ci_low", c, k.min_top1, False))
    if k.max_peak_memory_mb is not None:
        checks.append(_check("max_peak_memory_mb", "memory_rss_mb", None, c, k.max_peak_memory_mb, True))
    if k.max_top1_drop is not None:
        drop = c.metric("top1_drop_vs_fp32")
        drop = max(0.0, drop) if math.isfinite(drop) else drop  # a gain is no drop
        ok = math.isfinite(drop) and drop <= k.max_top1_drop
        margin = (k.max_top1_drop - drop) if math.isfinite(drop) else -math.inf
        checks.append(Check("max_top1_drop", "top1_drop_vs_fp32", drop, drop, k.max_top1_drop, ok, ok, margin))
    if k.families is not None:
        checks.append(_member("families", "family", c.family, k.families))
    if k.precisions is not None:
        checks.append(_member("precisions", "precision", c.precision, k.precisions))
    parity = c.metric("onnx_parity_ok")
    said = (
        "the ONNX export matches the PyTorch model"
        if parity == 1.0
        else "not measured"
        if not math.isfinite(parity)
        else f"the ONNX export differs from the PyTorch model (onnx_parity_ok={parity:g})"
    )
    checks.append(Check("onnx_parity", "onnx_parity_ok", parity, parity, 1.0, parity == 1.0, parity == 1.0, 0.0, said))
    for needed in ("top1", k.latency_metric, "size_mb"):
        if not math.isfinite(c.metric(needed)) and all(ch.metric != needed for ch in checks):
            checks.append(Check("measured", needed, math.nan, math.nan, 0.0, False, False, -math.inf))
    if all(ch.passed for ch in checks):
        label: Label = "feasible"
    elif all(ch.point_passed for ch in checks):
        label = "marginal"
    else:
        label = "infeasible"
    return Verdict(c, label, tuple(checks))


COST_METRIC = {"top1": "top1", "size": "size_mb", "params": "params_m", "gmacs": "gmacs", "memory": "memory_rss_mb"}


def cost_term(what: str, k: Constraints) -> tuple[str, float]:
    """The metric behind ``what`` and its sign in a lower-is-better cost (top-1 is the one that grows)."""
    return (k.latency_metric if what == "latency" else COST_METRIC[what]), (-1.0 if what == "top1" else 1.0)


def _cost(c: Candidate, metric: str, sign: float) -> float:
    v = c.metrics.get(metric, math.nan)
    return sign * v if math.isfinite(v) else math.inf


def cost(c: Candidate, what: str, k: Constraints) -> float:
    """A lower-is-better figure for ``what``; unmeasured is +inf (sorts last, never crashes the sort)."""
    return _cost(c, *cost_term(what, k))


def score(c: Candidate, k: Constraints) -> float:
    """The objective's figure, smaller is better (the weighted objective is sum(weight * cost))."""
    if k.objective == "weighted":
        return sum(w * cost(c, m, k) for m, w in (k.weights or {}).items() if w)
    return cost(c, k.objective, k)


def objective_key(v: Verdict, k: Constraints) -> tuple[float, ...]:
    """Smaller is better. Ties break on the declared tie-breakers, then (in rank) on the variant name and version."""
    return rank_key(k)(v.candidate)[0]


def rank_key(k: Constraints) -> Callable[[Candidate], tuple[tuple[float, ...], str, int]]:
    """The order ``rank`` sorts on, as a function of the candidate.

    ``score``, then the tie-breakers' costs, then the variant name and version; metric names and signs are resolved
    once, not per candidate.
    """
    ties = [cost_term(m, k) for m in k.effective_tie_breakers]
    if k.objective == "weighted":
        terms = [(w, *cost_term(m, k)) for m, w in (k.weights or {}).items() if w]

        def objective(c: Candidate) -> float:
            return sum(w * _cost(c, m, sign) for w, m, sign in terms)

    else:
        metric, sign = cost_term(k.objective, k)

        def objective(c: Candidate) -> float:
            return _cost(c, metric, sign)

    def key(c: Candidate) -> tuple[tuple[float, ...], str, int]:
        return (objective(c), *(_cost(c, m, s) for m, s in ties)), c.variant, int(c.version)

    return key


def rank(verdicts: Iterable[Verdict], k: Constraints) -> list[Verdict]:
    key = rank_key(k)
    return sorted(verdicts, key=lambda v: key(v.candidate))


def feasible_in_rank_order(candidates: Iterable[Candidate], k: Constraints) -> Iterator[Verdict]:
    """The feasible verdicts at ``k``'s operating point, best first (see :meth:`RankedPool.feasible`)."""
    return RankedPool.build(candidates, k).feasible()


def nearest(verdicts: Iterable[Verdict], n: int = 3) -> list[Verdict]:
    """The infeasible candidates closest to feasibility: fewest failed checks, then smallest total shortfall."""

    def distance(v: Verdict) -> tuple[int, float]:
        return len(v.failed), -sum(max(-1e9, c.margin) for c in v.failed)

    return sorted(verdicts, key=distance)[:n]


def recency(c: Candidate) -> tuple[int, int]:
    """How recently a candidate was measured (larger is newer): creation time, then version number."""
    return c.created_ms, int(c.version) if c.version.isdigit() else 0


def at_point(c: Candidate, k: Constraints) -> bool:
    """Measured on the target runner at the operating point (precision, batch, threads, a pinned host), any fingerprint.

    ``k`` targets one runner (a host target is answered runner by runner: :mod:`registry.hosts`).
    """
    return (
        c.runner == k.target
        and c.precision == k.effective_precision
        and c.batch_size == k.batch_size
        and (k.threads is None or c.threads == str(k.threads))
        and (k.host is None or c.host == k.host)
    )


def target_fingerprint(pool: list[Candidate], k: Constraints) -> str | None:
    """The fingerprint measurements are compared on: the declared one, else the most recently measured one."""
    if k.fingerprint is not None:
        return k.fingerprint
    if not pool:
        return None
    return max(pool, key=recency).fingerprint


def at_operating_point(candidates: Iterable[Candidate], k: Constraints) -> list[Candidate]:
    """Candidates measured on the target at the operating point, on one fingerprint (never mixed)."""
    pool = [c for c in candidates if at_point(c, k)]
    fp = target_fingerprint(pool, k)
    return [c for c in pool if c.fingerprint == fp]


@dataclass(frozen=True, eq=False)
class RankedPool:
    """``at_operating_point(candidates, k)`` sorted on rank's key: what ``get_best`` walks, best first.

    Built once per index snapshot and constraints; a delta refresh carries it over with :meth:`updated` instead of
    ranking every candidate again.
    """

    k: Constraints
    fingerprint: str | None
    newest: tuple[int, int] | None  # the newest measurement at the operating point, on any fingerprint
    keys: list[tuple[tuple[float, ...], str, int]]
    candidates: list[Candidate]  # in rank order, parallel to keys

    @classmethod
    def build(cls, candidates: Iterable[Candidate], k: Constraints) -> RankedPool:
        point = [c for c in candidates if at_point(c, k)]
        fp = target_fingerprint(point, k)
        key = rank_key(k)
        ranked = sorted(((key(c), c) for c in point if c.fingerprint == fp), key=lambda kc: kc[0])
        newest = max(map(recency, point), default=None)
        return cls(k, fp, newest, [kc[0] for kc in ranked], [kc[1] for kc in ranked])

    def feasible(self) -> Iterator[Verdict]:
        """The feasible verdicts best first, judging candidates only as far as the caller reads.

        The same sequence as ``rank([v for v in verdicts if v.label == "feasible"], k)``: ``get_best`` judges a
        handful of candidates instead of all of them.
        """
        for c in self.candidates:
            v = judge(c, self.k)
            if v.label == "feasible":
                yield v

    def updated(self, removed: Iterable[Candidate], added: Iterable[Candidate]) -> RankedPool | None:
        """The pool once the ``removed`` candidates left and ``added`` came (a re-read version is in both).

        Each change is found by bisection on rank's key: the cost grows with the changes, not with the pool. None when
        the change moves the target fingerprint (a newer measurement on other hardware, or the newest one gone): the
        caller builds the pool again.
        """
        k, fp, newest = self.k, self.fingerprint, self.newest
        left = [c for c in removed if at_point(c, k)]
        came = [c for c in added if at_point(c, k)]
        if k.fingerprint is None:
            if newest is not None and any(recency(c) == newest for c in left):
                back = [c for c in came if recency(c) == newest]
                if not back or back[0].fingerprint != fp:
                    return None
            for c in came:
                if newest is None or recency(c) > newest:
                    if c.fingerprint != fp:
                        return None
                    newest = recency(c)
        keys, candidates, key = list(self.keys), list(self.candidates), rank_key(k)
        for c in left:
            if c.fingerprint == fp:
                at = bisect.bisect_left(keys, key(c))
                if at < len(candidates) and candidates[at].version == c.version:
                    del keys[at], candidates[at]
        for c in came:
            if c.fingerprint == fp:
                kk = key(c)
                at = bisect.bisect(keys, kk)
                keys.insert(at, kk)
                candidates.insert(at, c)
        return RankedPool(k, fp, newest, keys, candidates)


def select(candidates: Iterable[Candidate], k: Constraints) -> tuple[Verdict, list[Verdict]]:
    """The best feasible candidate for ``k`` among those measured on its target, and every verdict."""
    candidates = list(candidates)
    pool = at_operating_point(candidates, k)
    if not pool:
        raise no_candidates(k, candidates)
    verdicts = [judge(c, k) for c in pool]
    feasible = rank([v for v in verdicts if v.label == "feasible"], k)
    if not feasible:
        raise no_feasible(verdicts, k)
    return feasible[0], verdicts


def no_candidates(k: Constraints, measured: Iterable[Candidate] = ()) -> NoCandidatesError:
    """Nothing at ``k``'s operating point; with ``measured`` (the dataset's candidates), which threads there were."""
    text = (
        f"nothing measured on runner {k.target!r} for dataset {k.dataset!r} at batch {k.batch_size}, "
        f"precision {k.effective_precision}"
        + (f", threads {k.threads}" if k.threads else "")
        + (f", fingerprint {k.fingerprint}" if k.fingerprint else "")
    )
    if k.threads is not None:
        any_threads = k.model_copy(update={"threads": None})
        found = sorted({c.threads for c in measured if at_point(c, any_threads)})
        if found:
            text += f"; measured there with threads {', '.join(found)} only"
            if "all" in found:
                import os

                cores = os.cpu_count()
                text += f" ('all': the runner's default, every core of the measuring host; this one has {cores})"
            text += f". Drop threads to use them, or measure with the runner's threads set to {k.threads}"
    return NoCandidatesError(text)


def no_feasible(verdicts: list[Verdict], k: Constraints, unavailable: Iterable[Candidate] = ()) -> NoFeasibleModelError:
    """The error naming the nearest misses; ``unavailable``: feasible candidates left out (their artifact is gone)."""
    gone = {c.version for c in unavailable}
    near = nearest([v for v in verdicts if v.candidate.version not in gone])
    lines = "\n  ".join(v.describe() for v in near)
    note = f" (feasible but artifact missing: {', '.join('v' + v for v in sorted(gone, key=int))})" if gone else ""
    return NoFeasibleModelError(
        f"no model on {k.target!r} for {k.dataset!r} satisfies every constraint{note}; nearest:\n  {lines}", near
    )
