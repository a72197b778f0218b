"""Top-k accuracy on held-out data, a bootstrap interval for top-1, per-class accuracy and a confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

METRICS = {  # name: (unit, higher_is_better)
    "top1": ("fraction", True),
    "top5": ("fraction", True),
    "top1_ci_low": ("fraction", True),
    "top1_ci_high": ("fraction", True),
    "top1_worst_class": ("fraction", True),
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


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``; a sample whose logits are all non-finite counts in no column (it is wrong)."""
    finite = np.isfinite(logits).any(axis=1)
    pred = np.argmax(np.where(np.isfinite(logits), logits, -np.inf), axis=1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels[finite], pred[finite]), 1)
    return cm


def per_class_accuracy(cm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class with no held-out image); the denominator counts every sample."""
    support = np.bincount(labels, minlength=cm.shape[0]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def write_accuracy_artifacts(
    logits: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], out_dir: Path, title: str
) -> tuple[dict[str, Path], dict[str, float]]:
    """Per-class accuracy (CSV) and a confusion-matrix picture (PNG); returns ``{name: file}`` and summary metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cm = confusion_matrix(logits, labels, len(classes))
    acc = per_class_accuracy(cm, labels)
    support = np.bincount(labels, minlength=len(classes))
    csv = out_dir / "per_class_accuracy.csv"
    rows = ["class,support,correct,accuracy"]
    rows += [
        f"{c},{int(n)},{int(cm[i, i])},{a:.6f}" for i, (c, n, a) in enumerate(zip(classes, support, acc, strict=True))
    ]
    csv.write_text("\n".join(rows) + "\n")
    size = max(4.0, min(24.0, 0.45 * len(classes) + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(
                    j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black"
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    png = out_dir / "confusion_matrix.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    seen = acc[np.isfinite(acc)]
    worst = float(seen.min()) if seen.size else float("nan")
    return {"per_class_accuracy": csv, "confusion_matrix": png}, {"top1_worst_class": worst}
