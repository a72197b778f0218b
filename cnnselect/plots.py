"""Trade-off pictures: top-1 against p95 latency (with the Pareto frontier), against params and against MB.

Pure frontier maths first (tested on hand-made points), then matplotlib on the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.constraints import Constraints
    from registry.selection import Candidate, Verdict

# (metric on the x axis, axis label): every panel plots top-1 (higher is better) against a cost (lower is better).
AXES: tuple[tuple[str, str], ...] = (
    ("latency_p95_ms", "p95 latency (ms, batch 1)"),
    ("params_m", "parameters (M)"),
    ("size_mb", "artifact size (MB)"),
)
COLORS = {"feasible": "#1a9850", "marginal": "#fdae61", "infeasible": "#bdbdbd", None: "#4575b4"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, for ``x`` lower-is-better and ``y`` higher-is-better.

    A point is dominated when another is at least as good on both axes and strictly better on one. Points with a
    non-finite coordinate are never on the frontier; exact duplicates are all kept. Returned sorted by ``x``.
    """
    finite = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    front = []
    for i in finite:
        xi, yi = points[i]
        dominated = any(
            points[j][0] <= xi and points[j][1] >= yi and (points[j][0] < xi or points[j][1] > yi) for j in finite
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


@dataclass(frozen=True)
class Point:
    """One candidate as plotted: its label decides the colour (``None`` when no team is judging)."""

    name: str
    metrics: dict[str, float]
    label: str | None = None
    champion: bool = False

    def xy(self, metric: str) -> tuple[float, float]:
        return self.metrics.get(metric, math.nan), self.metrics.get("top1", math.nan)


def points_of(candidates: Sequence[Candidate]) -> list[Point]:
    return [Point(f"{c.variant} v{c.version}", dict(c.metrics)) for c in candidates]


def points_of_verdicts(verdicts: Sequence[Verdict], champion_version: str | None) -> list[Point]:
    return [
        Point(
            f"{v.candidate.variant} v{v.candidate.version}",
            dict(v.candidate.metrics),
            v.label,
            v.candidate.version == champion_version,
        )
        for v in verdicts
    ]


def frontier_names(points: Sequence[Point], metric: str = "latency_p95_ms") -> list[str]:
    return [points[i].name for i in pareto_front([p.xy(metric) for p in points])]


def _budget(k: Constraints | None, metric: str) -> float | None:
    if k is None:
        return None
    return {k.latency_metric: k.max_latency_ms, "params_m": k.max_params_m, "size_mb": k.max_size_mb}.get(metric)


def _minor_label(v: float, _pos: int) -> str:
    """Label the 2s and 5s of a log axis only: every minor tick labelled collides."""
    lead = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
    return f"{v:g}" if lead in (2, 5) else ""


def plot_tradeoffs(points: Sequence[Point], title: str, out: Path, constraints: Constraints | None = None) -> Path:
    """One PNG, three panels (latency, params, MB); the frontier drawn as a step line on each; budgets dashed.

    With ``constraints`` the latency panel shows the team's percentile (budgets are checked on its upper bound).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(AXES), figsize=(15, 4.6), constrained_layout=True)
    lat = constraints.latency_metric if constraints is not None else "latency_p95_ms"
    axes_spec = [(lat, f"{lat[8:11]} latency (ms, batch 1)"), *AXES[1:]]
    for ax, (metric, label) in zip(axes, axes_spec, strict=True):
        xy = [p.xy(metric) for p in points]
        shown = [(p, x, y) for p, (x, y) in zip(points, xy, strict=True) if math.isfinite(x) and math.isfinite(y)]
        for p, x, y in shown:
            ax.scatter(
                x,
                y,
                s=140 if p.champion else 42,
                c=COLORS.get(p.label, COLORS[None]),
                marker="*" if p.champion else "o",
                edgecolors="black",
                linewidths=0.6,
                zorder=3,
            )
            ax.annotate(p.name.split(" v")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(xy)
        if front:
            fx = [xy[i][0] for i in front]
            fy = [xy[i][1] for i in front]
            ax.step(fx, fy, where="post", color="#d73027", linewidth=1.4, label="Pareto frontier", zorder=2)
        limit = _budget(constraints, metric)
        if limit is not None:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"budget {limit:g}")
        if constraints is not None and constraints.min_top1 is not None:
            ax.axhline(
                constraints.min_top1,
                color="black",
                linestyle=":",
                linewidth=1,
                label=f"min top-1 {constraints.min_top1:g}",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (held-out)")
        ax.grid(True, alpha=0.3)
        if metric != lat and shown and min(x for _, x, _ in shown) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
            ax.tick_params(axis="x", which="minor", labelsize=7)
        if not shown:
            ax.text(0.5, 0.5, "nothing measured", transform=ax.transAxes, ha="center", va="center")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
