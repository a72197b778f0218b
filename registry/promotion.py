"""Promotion: move each team's alias to its winner, serialized per team, without flapping, with the evidence kept.

MLflow keeps no alias history (mlflow#2169), so every move is also a run in the ``cnnselect/promotions`` experiment
(constraints snapshot, champion, winner, runner-up, every rejected candidate and why, in ``evidence.json``) and tags
on the versions involved (``cnnselect.promotion.<team>.*``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from registry import names
from registry.errors import NoCandidatesError, NoFeasibleModelError, PromotionLockedError
from registry.selection import Candidate, Verdict, judge, rank, score
from registry.stores.mlflow_tables import dialect_of, shared_engine
from registry.teams import Team

if TYPE_CHECKING:
    from registry.client import Answer, Registry

Action = Literal["promoted", "kept", "none"]


@dataclass(frozen=True)
class Decision:
    team: str
    action: Action
    reason: str
    previous: str | None  # champion version before
    champion: str | None  # champion version after
    run_id: str | None = None  # the promotions run that records a move
    shortlist: tuple[str, ...] = ()  # cold start: what to measure first when nothing qualifies
    previous_variant: str | None = None  # the model behind ``previous``, when the store still has it
    champion_variant: str | None = None  # the model behind ``champion``
    challenger: str | None = None  # the version get_best answers now (None when nothing qualifies)
    challenger_variant: str | None = None
    reasons: tuple[str, ...] = ()  # ``reason``, one clause a line, with the figures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> list[str]:
        """The decision as a block of lines: team and action, champion and challenger by model and version, why."""

        def who(variant: str | None, version: str | None) -> str:
            if version is None:
                return "none"
            return f"{variant or '(model gone)'} v{version}"

        if self.action == "promoted":
            champ = f"{who(self.previous_variant, self.previous)} -> {who(self.champion_variant, self.champion)}"
        else:
            champ = who(self.champion_variant, self.champion) + (" (kept)" if self.action == "kept" else "")
        lines = [f"{self.team}: {self.action}", f"  champion:   {champ}"]
        lines.append(f"  challenger: {who(self.challenger_variant, self.challenger) if self.challenger else 'none'}")
        lines.append("  why:")
        lines += [f"    {r}" for r in self.reasons or (self.reason,)]
        if self.shortlist:
            lines.append(f"  measure first: {', '.join(self.shortlist)}")
        return lines


def _lock_key(team: str) -> int:
    return int.from_bytes(hashlib.sha256(f"cnnselect.promotion.{team}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def team_lock(registry: Registry, team: str, blocking: bool = True) -> Iterator[str]:
    """One promotion per team at a time; yields the mechanism's name.

    A PostgreSQL advisory lock on a PostgreSQL store (good across machines), else a file lock under
    ``CNNSELECT_HOME/locks`` (one machine: SQLite stores, or a tracking server used from one Airflow worker host).
    """
    names.validate_team_name(team)
    if dialect_of(registry.tracking_uri) == "postgresql":
        import sqlalchemy as sa

        key = _lock_key(team)
        with shared_engine(registry.tracking_uri).connect() as conn:
            if blocking:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            elif not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                raise PromotionLockedError(f"a promotion for team {team!r} is running (PostgreSQL advisory lock)")
            conn.commit()
            try:
                yield "postgresql-advisory-lock"
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    from filelock import FileLock, Timeout

    folder = registry.settings.home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"promotion-{team}.lock"), timeout=-1 if blocking else 0)
    try:
        lock.acquire()
    except Timeout:
        raise PromotionLockedError(f"a promotion for team {team!r} is running (file lock {lock.lock_file})") from None
    try:
        yield "file-lock"
    finally:
        lock.release()


def beats(challenger: Candidate, champion: Candidate, team: Team) -> str | None:
    """Why the challenger wins beyond measurement noise, or None when the difference is within it."""
    k, policy = team.constraints, team.promotion
    gain = score(champion, k) - score(challenger, k)  # > 0: challenger better on the objective
    if policy.margin > 0 and gain > policy.margin:
        return f"{k.objective} better by {gain:.4g} > declared margin {policy.margin:g}"
    if policy.require_disjoint_intervals and k.objective == "top1":
        low, high = challenger.metric("top1_ci_low"), champion.metric("top1_ci_high")
        if low > high:  # NaN compares False: no interval, no claim
            return f"top-1 intervals disjoint: challenger lower bound {low:.4g} > champion upper bound {high:.4g}"
    if policy.require_disjoint_intervals and k.objective == "latency":
        ub, point = challenger.metric(k.latency_metric.replace("_ms", "_ub_ms")), champion.metric(k.latency_metric)
        if ub < point:
            return f"latency: challenger upper bound {ub:.4g} ms < champion estimate {point:.4g} ms"
    if policy.margin == 0 and k.objective in ("size", "weighted") and gain > 0:
        return f"{k.objective} better by {gain:.4g} (deterministic figure, no margin declared)"
    return None


def _why_none(exc: NoCandidatesError | NoFeasibleModelError) -> tuple[str, ...]:
    """Why nothing qualifies, a line each: the error, then each nearest miss and every check it fails."""
    if not isinstance(exc, NoFeasibleModelError):
        return (str(exc),)
    lines = [str(exc).split(";", 1)[0] + "; the nearest misses:"]
    for v in exc.nearest:
        lines.append(f"{v.candidate.variant} v{v.candidate.version} ({v.label}):")
        lines += [f"  {c.describe()}" for c in v.failed]
    return tuple(lines)


def _objective(c: Candidate | None, k: Any) -> str:
    """The candidate's figure on the team's objective, with its bound when one was logged."""
    if c is None:
        return "-"
    if k.objective == "top1":
        return f"top1 {c.metric('top1'):.4g} (interval {c.metric('top1_ci_low'):.4g}-{c.metric('top1_ci_high'):.4g})"
    if k.objective == "latency":
        return f"{k.latency_metric} {c.metric(k.latency_metric):.4g} ms"
    if k.objective == "size":
        return f"size_mb {c.metric('size_mb'):.4g}"
    return f"weighted cost {score(c, k):.4g}"


def why_replace(champion: Candidate | None, version: str | None, best: Answer, team: Team) -> str | None:
    """The reason to move the alias, or None to keep the champion (anti-flapping)."""
    if version is None:
        return "no champion yet"
    if champion is None:
        return f"champion v{version} is no longer a usable candidate (deleted, failed or artifact missing)"
    if team.constraints.on_host:  # runtimes differ in fingerprint: stale when off the machine or its latest software
        if champion.host != best.candidate.host:
            return f"champion v{version} is stale: measured on host {champion.host or '?'}, target now on " + (
                best.candidate.host
            )
        if all(c.version != champion.version for c in best.pool):
            return (
                f"champion v{version} is stale: its runtime {champion.runner} is no longer weighed at the team's "
                "operating point, or was measured again on this host since"
            )
    elif champion.fingerprint != best.candidate.fingerprint:
        return f"champion v{version} is stale: measured on fingerprint {champion.fingerprint}, target now on " + (
            best.candidate.fingerprint
        )
    if champion.evaluator_version != names.EVALUATOR_VERSION:
        return f"champion v{version} is stale: evaluator version {champion.evaluator_version or '?'}"
    verdict = judge(champion, team.constraints)
    if verdict.label != "feasible":
        return f"champion v{version} became {verdict.label}: " + "; ".join(c.describe() for c in verdict.failed)
    win = beats(best.candidate, champion, team)
    return f"challenger v{best.candidate.version} wins: {win}" if win else None


def _figures(v: Verdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    c = v.candidate
    return {"version": c.version, "variant": c.variant, "uri": c.uri, "label": v.label, "metrics": c.metrics}


def evidence(team: Team, best: Answer, champion: Candidate | None, reason: str) -> dict[str, Any]:
    k = team.constraints
    ranked = [v for v in rank(best.verdicts, k) if v.label == "feasible"]
    return {
        "team": team.name,
        "constraints": k.model_dump(mode="json"),
        "policy": team.promotion.model_dump(mode="json"),
        "reason": reason,
        "winner": _figures(best.verdict),
        "runner_up": _figures(ranked[1] if len(ranked) > 1 else None),
        "previous_champion": _figures(judge(champion, k)) if champion else None,
        "rejected": [
            {"version": v.candidate.version, "variant": v.candidate.variant, "label": v.label, "why": v.describe()}
            for v in best.verdicts
            if v.label != "feasible"
        ],
    }


def _record(registry: Registry, team: Team, best: Answer, previous: str | None, ev: dict[str, Any], sweep: str) -> str:
    """The move as a finished run in the promotions experiment, plus tags on the versions involved."""
    from registry import writes

    client, settings = registry.client, registry.settings
    new, model = best.candidate.version, best.candidate.model_name
    tags = {
        names.TAG_TEAM: team.name,
        names.TAG_DATASET: team.constraints.dataset,
        names.TAG_SWEEP: sweep,
        "cnnselect.promotion.model": model,
        "cnnselect.promotion.from_version": previous or "",
        "cnnselect.promotion.to_version": new,
        "cnnselect.promotion.reason": ev["reason"][:4000],
    }
    run_name = f"{team.name}: v{previous or '-'} -> v{new}"
    rid = writes.record_promotion(settings, client, tags, run_name, best.candidate.metrics, ev)
    stamp = str(int(time.time() * 1000))
    promoted = {"promoted_at": stamp, "run_id": rid, "reason": ev["reason"][:4000]}
    writes.set_version_tags(
        settings, client, model, new, {names.promotion_tag(team.name, f): v for f, v in promoted.items()}
    )
    if previous and previous != new:
        demoted = {"demoted_at": stamp, "demoted_by": rid}
        with contextlib.suppress(Exception):  # the previous champion may have been deleted
            writes.set_version_tags(
                settings, client, model, previous, {names.promotion_tag(team.name, f): v for f, v in demoted.items()}
            )
    return rid


def promote(which: Team | str, registry: Registry | None = None, *, blocking: bool = True, sweep: str = "") -> Decision:
    """Pick the team's winner and move its alias when the anti-flapping rule allows; idempotent."""
    from registry.client import default_registry

    reg = registry or default_registry()
    team = reg.team(which) if isinstance(which, str) else which
    k = team.constraints
    model, alias = names.registered_model_name(k.dataset), names.team_alias(team.name)
    with team_lock(reg, team.name, blocking=blocking):
        reg.invalidate(k.dataset)  # decide on what the store holds now, inside the lock
        snap = reg.index.snapshot(model)
        previous = snap.aliases.get(alias)
        found = [c for c in snap.candidates if c.version == previous]
        champion = found[0] if found and reg.artifact_ok(found[0], snap.verified) else None
        was = found[0].variant if found else None
        try:
            best = reg.get_best(k)
        except (NoCandidatesError, NoFeasibleModelError) as exc:
            shortlist = tuple(reg.recommend(k))
            why_none = f"{exc}; measure first: {', '.join(shortlist)}"
            lines = _why_none(exc)
            return Decision(
                team.name, "none", why_none, previous, previous, None, shortlist, was, was, reasons=lines
            )  # fmt: skip
        new, new_variant = best.candidate.version, best.candidate.variant
        if new == previous:
            still = (f"champion {new_variant} v{new} is still the best", *(c.describe() for c in best.verdict.checks))
            return Decision(team.name, "kept", "champion is still the best", previous, previous, None, (), was, was,
                            new, new_variant, still)  # fmt: skip
        reason = why_replace(champion, previous, best, team)
        if reason is None:
            why = f"challenger v{new} does not beat champion v{previous} beyond noise"
            noise = (
                f"challenger {new_variant} v{new} does not beat champion {was} v{previous} beyond noise",
                f"{k.objective}: challenger {_objective(best.candidate, k)}, champion {_objective(champion, k)}",
                f"declared margin {team.promotion.margin:g}"
                + (", and the confidence intervals overlap" if team.promotion.require_disjoint_intervals else ""),
            )
            return Decision(team.name, "kept", why, previous, previous, None, (), was, was, new, new_variant,
                            noise)  # fmt: skip
        from registry.writes import set_alias

        set_alias(reg.settings, reg.client, model, alias, new)
        run_id = _record(reg, team, best, previous, evidence(team, best, champion, reason), sweep)
        reg.invalidate(k.dataset)
        return Decision(team.name, "promoted", reason, previous, new, run_id, (), was, new_variant, new, new_variant,
                        tuple(reason.split("; ")))  # fmt: skip


def history(team: str, registry: Registry | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every alias move for the team on its dataset (default: the team's current one), newest first."""
    from registry.client import default_registry

    reg = registry or default_registry()
    dataset = names.validate_name("dataset", dataset or reg.team(team).constraints.dataset)
    exp = reg.client.get_experiment_by_name(names.PROMOTIONS_EXPERIMENT)
    if exp is None:
        return []
    runs = reg.client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{names.TAG_TEAM}` = '{names.validate_team_name(team)}' "
        f"and tags.`{names.TAG_DATASET}` = '{dataset}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    return [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "from_version": r.data.tags.get("cnnselect.promotion.from_version") or None,
            "to_version": r.data.tags.get("cnnselect.promotion.to_version"),
            "reason": r.data.tags.get("cnnselect.promotion.reason"),
        }
        for r in runs
    ]
