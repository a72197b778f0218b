"""Per model and host: every runtime/precision measured there, and which of them are on the model's frontier.

A model deployed on one machine can ship as several artifacts (onnxruntime FP32, OpenVINO INT8, an ExecuTorch
``.pte``...). On each host (the hardware-only id on each version's card) and for each model, the newest measurement
of each runner and thread count is one point; the points no other point of the same model dominates on (p95 latency
lower, top-1 higher) are the model's runtime frontier there: the artifacts worth shipping on that machine. The
leaderboard and the report show it; ``get_best(Constraints(target="cpu-host"))`` picks among the same artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cnnselect.plots import pareto_front
from registry.selection import Candidate, recency

LATENCY = "latency_p95_ms"


@dataclass(frozen=True)
class Artifact:
    """One deployable artifact of a model on a host: the newest measurement of its runner at its thread count."""

    candidate: Candidate
    on_frontier: bool
    fastest: bool  # the lowest p95 of the model on this host

    @property
    def p95_ms(self) -> float:
        return self.candidate.metrics.get(LATENCY, math.nan)

    @property
    def top1(self) -> float:
        return self.candidate.metrics.get("top1", math.nan)

    def to_dict(self) -> dict[str, object]:
        c = self.candidate
        return {
            "variant": c.variant,
            "runner": c.runner,
            "precision": c.precision,
            "threads": c.threads,
            "top1": self.candidate.metrics.get("top1"),
            "latency_p50_ms": c.metrics.get("latency_p50_ms"),
            "latency_p95_ms": c.metrics.get(LATENCY),
            "size_mb": c.metrics.get("size_mb"),
            "on_frontier": self.on_frontier,
            "fastest": self.fastest,
            "uri": c.uri,
        }


def _model_frontier(points: list[Candidate]) -> list[Artifact]:
    """``points`` of one model on one host, fastest first, each marked on or off the frontier."""
    xy = [(c.metrics.get(LATENCY, math.nan), c.metrics.get("top1", math.nan)) for c in points]
    front = set(pareto_front(xy))
    order = sorted(range(len(points)), key=lambda i: (xy[i][0] if math.isfinite(xy[i][0]) else math.inf, -xy[i][1]))
    fastest = order[0] if order and math.isfinite(xy[order[0]][0]) else None
    return [Artifact(points[i], i in front, i == fastest) for i in order]


def runtime_frontiers(candidates: Iterable[Candidate]) -> dict[str, dict[str, list[Artifact]]]:
    """Host id -> model -> its artifacts there, fastest first; versions without a host id are left out.

    Each (runner, threads) of a model on a host counts once, at its newest measurement (an older fingerprint of the
    same runtime is history, not a choice).
    """
    newest: dict[tuple[str, str, str, str], Candidate] = {}
    for c in candidates:
        if not c.host:
            continue
        key = (c.host, c.variant, c.runner, c.threads)
        if key not in newest or recency(c) > recency(newest[key]):
            newest[key] = c
    grouped: dict[str, dict[str, list[Candidate]]] = {}
    for (host, variant, _, _), c in sorted(newest.items()):
        grouped.setdefault(host, {}).setdefault(variant, []).append(c)
    return {
        host: {variant: _model_frontier(points) for variant, points in sorted(models.items())}
        for host, models in sorted(grouped.items())
    }
