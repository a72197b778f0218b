"""Top-k accuracy on held-out data, with a bootstrap interval for top-1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

METRICS = {  # name: (unit, higher_is_better)
    "top1": ("fraction", True),
    "top5": ("fraction", True),
    "top1_ci_low": ("fraction", True),
    "top1_ci_high": ("fraction", True),
}


@dataclass(frozen=True)
class AccuracyResult:
    top1: float
    top5: float
    top1_ci_low: float
    top1_ci_high: float
    n: int

    def to_metrics(self) -> dict[str, float]:
        d = asdict(self)
        d["heldout_images"] = float(d.pop("n"))
        return d


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-sample 0/1: is the label among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def bootstrap_interval(
    correct: np.ndarray, level: float = 0.95, rounds: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes."""
    if correct.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.binomial(correct.size, correct.mean(), size=rounds) / correct.size  # resampling 0/1 == binomial
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> AccuracyResult:
    """Top-1/top-5 from logits; non-finite logits count as wrong answers, never as right ones."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
    logits = np.where(np.isfinite(logits), logits, -np.inf)
    c1 = topk_correct(logits, labels, 1) & np.isfinite(logits).any(axis=1)
    c5 = topk_correct(logits, labels, 5) & np.isfinite(logits).any(axis=1)
    lo, hi = bootstrap_interval(c1.astype(np.float64))
    return AccuracyResult(float(c1.mean()), float(c5.mean()), lo, hi, int(len(labels)))


def predict_all(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
