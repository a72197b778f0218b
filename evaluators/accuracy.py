"""Top-k accuracy on held-out data, a bootstrap interval for top-1, per-class accuracy and a confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    png = out_dir / "confusion_matrix.png"
    confusion_picture(cm, classes, title).save(png)
    seen = acc[np.isfinite(acc)]
    worst = float(seen.min()) if seen.size else float("nan")
    return {"per_class_accuracy": csv, "confusion_matrix": png}, {"top1_worst_class": worst}


def _blues(v: np.ndarray) -> np.ndarray:
    """``v`` in [0, 1] to RGB, from near-white to dark blue (the ends of matplotlib's "Blues")."""
    lo, hi = np.array([247, 251, 255], dtype=np.float64), np.array([8, 48, 107], dtype=np.float64)
    return (lo + (hi - lo) * v[..., None]).round().astype(np.uint8)


def confusion_picture(cm: np.ndarray, classes: tuple[str, ...], title: str) -> Any:
    """The confusion matrix as a PIL image: true classes down, predicted across, counts in the cells up to 30 classes.

    Drawn with Pillow (a few milliseconds) rather than matplotlib (about 0.35 s a picture, and 0.7 s to import): a
    sweep draws one per model and runner.
    """
    from PIL import Image, ImageDraw, ImageFont

    n = len(classes)
    font = ImageFont.load_default()
    labelled = n <= 30
    cell = 28 if labelled else max(2, 600 // max(n, 1))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max((probe.textlength(c, font=font) for c in classes), default=0)) + 8 if labelled else 0
    left, top = 24 + label_w, 28 + label_w  # room for the axis names and the class labels
    width, height = max(left + n * cell + 8, int(probe.textlength(title, font=font)) + 16), top + n * cell + 8
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    scale = cm / cm.max() if cm.max() > 0 else np.zeros(cm.shape)
    grid = np.kron(_blues(scale), np.ones((cell, cell, 1), dtype=np.uint8))  # each cell a square of its colour
    img.paste(Image.fromarray(grid, "RGB"), (left, top))
    draw.text((8, 6), title, fill="black", font=font)
    draw.text((left + n * cell // 2 - 24, top - 16 - label_w), "predicted", fill="black", font=font)
    true_label = Image.new("RGB", (40, 12), "white")
    ImageDraw.Draw(true_label).text((0, 0), "true", fill="black", font=font)
    img.paste(true_label.rotate(90, expand=True), (4, top + n * cell // 2 - 20))
    if labelled:
        for i, c in enumerate(classes):
            draw.text((20, top + i * cell + cell // 2 - 5), c, fill="black", font=font)
            mark = Image.new("RGB", (label_w, 12), "white")
            ImageDraw.Draw(mark).text((0, 0), c, fill="black", font=font)
            img.paste(mark.rotate(90, expand=True), (left + i * cell + cell // 2 - 6, top - label_w - 2))
        for (i, j), v in np.ndenumerate(cm):
            if v:
                colour = "white" if scale[i, j] > 0.5 else "black"
                x = left + j * cell + (cell - probe.textlength(str(v), font=font)) / 2
                draw.text((x, top + i * cell + cell // 2 - 5), str(v), fill=colour, font=font)
    return img
