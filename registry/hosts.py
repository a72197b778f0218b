"""Host targets: one machine of a host kind, every runtime measured on it, the best over all of them.

``Constraints(target="cpu-host")`` weighs each runner of the host kind (``Constraints.runners``: narrowed by
``runtimes``, ``precision`` and ``precisions``) at its own precision, on one machine: the pinned ``host`` id, else the
one of the newest candidate measured at any of those runners' operating points. Measurements of different runners on
one machine carry different fingerprints (other software), so the machine is told by the hardware-only host id
(``evaluators.runners.host_id``) on each version's card.

Within a runner the rule is the runner target's (:func:`registry.selection.at_operating_point`): one fingerprint, the
newest one measured on that host unless pinned. The answer is the best, under ``rank_key``, of every runner's best:
``rank_key`` does not depend on the runner and orders every candidate (variant and version break the last ties), so
it is the best over the union of the runners' pools. :func:`select` is that definition by brute force, the oracle the
fast paths (:mod:`registry.client`) are tested against.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from registry.constraints import Constraints
from registry.errors import NoCandidatesError
from registry.selection import (
    Candidate,
    RankedPool,
    Verdict,
    at_operating_point,
    at_point,
    judge,
    no_candidates,
    no_feasible,
    rank,
    rank_key,
    recency,
)
from registry.selection import select as select_runner


def runner_constraints(k: Constraints, host: str | None) -> list[Constraints]:
    """One runner target per runner ``k`` weighs, at that runner's precision, pinned to ``host``.

    For a runner target: ``k`` itself (with ``host`` pinned when given).
    """
    from evaluators.runners import RUNNER_PRECISION

    if not k.on_host:
        return [k if host is None else k.model_copy(update={"host": host})]
    deployment = k.effective_deployment
    return [
        k.model_copy(
            update={
                "target": r,
                "runtimes": None,
                "precision": RUNNER_PRECISION[r],
                "host": host,
                "deployment": deployment,
            }
        )  # fmt: skip
        for r in k.runners
    ]


def on_host_point(c: Candidate, k: Constraints, runners: list[Constraints] | None = None) -> bool:
    """Measured at one of the host target's runner operating points, with a host id (and the pinned fingerprint)."""
    if not c.host or (k.fingerprint is not None and c.fingerprint != k.fingerprint):
        return False
    return any(at_point(c, s) for s in runners or runner_constraints(k, k.host))


def target_host(candidates: Iterable[Candidate], k: Constraints) -> str | None:
    """The machine a host target is answered on: the pinned one, else the newest measured at its operating points."""
    if k.host is not None:
        return k.host
    runners = runner_constraints(k, None)
    newest = max((c for c in candidates if on_host_point(c, k, runners)), key=recency, default=None)
    return newest.host if newest is not None else None


def host_pool(candidates: Iterable[Candidate], k: Constraints) -> list[Candidate]:
    """Every candidate the host target weighs, in rank order (each runner's pool on the target host, merged)."""
    candidates = list(candidates)
    host = target_host(candidates, k)
    if host is None:
        return []
    pool = [c for s in runner_constraints(k, host) for c in at_operating_point(candidates, s)]
    return sorted(pool, key=rank_key(k))


def select(candidates: Iterable[Candidate], k: Constraints) -> tuple[Verdict, list[Verdict]]:
    """The best feasible candidate for ``k``, a runner or a host target, and every verdict; by brute force."""
    candidates = list(candidates)
    if not k.on_host:
        return select_runner(candidates, k)
    pool = host_pool(candidates, k)
    if not pool:
        raise no_candidates_on_host(k, candidates)
    verdicts = [judge(c, k) for c in pool]
    feasible = rank([v for v in verdicts if v.label == "feasible"], k)
    if not feasible:
        raise no_feasible(verdicts, k)
    return feasible[0], verdicts


def no_candidates_on_host(k: Constraints, measured: Iterable[Candidate] = ()) -> NoCandidatesError:
    """Nothing at the host target's operating points: which runtimes were weighed, and the hosts measured there."""
    if not k.on_host:
        return no_candidates(k, measured)
    runners = runner_constraints(k, None)
    measured = list(measured)
    anywhere = k.model_copy(update={"host": None, "fingerprint": None})
    hosts = sorted({c.host for c in measured if c.host and on_host_point(c, anywhere, runners)})
    hostless = any(not c.host and any(at_point(c, s) for s in runners) for c in measured)
    text = (
        f"nothing measured on host target {k.target!r} for dataset {k.dataset!r} at batch {k.batch_size} with "
        f"runtimes {', '.join(k.runners)}"
        + (f", threads {k.threads}" if k.threads else "")
        + (f", host {k.host}" if k.host else "")
        + (f", fingerprint {k.fingerprint}" if k.fingerprint else "")
    )
    if hosts and (k.host or k.fingerprint):
        text += f"; measured there on hosts {', '.join(hosts)}"
    if hostless:
        text += "; some versions there carry no host id (registered before them): `cnnselect add-cards` writes them"
    return NoCandidatesError(text)


def merged(pools: Iterable[RankedPool]) -> list[Candidate]:
    """Ranked pools of different runners as one pool in rank order (their keys are comparable: ``rank_key``)."""
    runs = [zip(p.keys, p.candidates, strict=True) for p in pools]
    return [c for _, c in heapq.merge(*runs, key=lambda kc: kc[0])]
