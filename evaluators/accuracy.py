"""Top-k accuracy on held-out data, a bootstrap interval for top-1, per-class accuracy and a confusion matrix.

Tie rule: classes are ranked by logit, highest first, and equal logits by class index, lowest first (a stable sort),
so a result never depends on how a partial sort happens to order ties. ``top1_tied`` counts the images whose
highest logit is shared by another class: with float logits (every runner's classifier is FP32) it is 0, and a
non-zero count says how many answers rest on the tie rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    "top1_tied": ("images", False),
}


@dataclass(frozen=True)
class AccuracyResult:
    top1: float
    top5: float
    top1_ci_low: float
    top1_ci_high: float
    n: int
    top1_tied: int = 0

    def to_metrics(self) -> dict[str, float]:
        d = asdict(self)
        d["heldout_images"] = float(d.pop("n"))
        d["top1_tied"] = float(d["top1_tied"])
        return d


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-sample 0/1: is the label among the ``k`` highest logits (ties: the lower class index ranks first)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def tied_top1(logits: np.ndarray) -> int:
    """Images whose highest logit is shared by another class."""
    if logits.shape[1] < 2:
        return 0
    top2 = -np.sort(-logits, axis=1)[:, :2]
    return int(np.sum(top2[:, 0] == top2[:, 1]))


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
    return AccuracyResult(float(c1.mean()), float(c5.mean()), lo, hi, int(len(labels)), tied_top1(logits))


def predict_all(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return predict_stream(predict, (x[i : i + batch_size] for i in range(0, len(x), batch_size)))


def predict_stream(predict: Callable[[np.ndarray], np.ndarray], batches: Iterable[np.ndarray]) -> np.ndarray:
    """Logits of every batch, concatenated (only the logits are kept, never the images)."""
    out = [np.asarray(predict(b), dtype=np.float32) for b in batches]
    if not out:
        raise ValueError("no images to predict")
    return np.concatenate(out)


def write_predictions(
    logits: np.ndarray, labels: np.ndarray, paths: list[str], head_names: list[str], out: Path, k: int = 5
) -> Path:
    """One CSV row per image: path, true class, top-k predicted classes and their logits (image-by-image checks)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    lines = ["path,label,correct," + ",".join(f"top{i + 1},logit{i + 1}" for i in range(top.shape[1]))]
    for path, y, row, t in zip(paths, labels, logits, top, strict=True):
        cells = ",".join(f"{head_names[j]},{row[j]:.6g}" for j in t)
        lines.append(f"{path},{head_names[y]},{int(t[0] == y)},{cells}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def confusion_matrix(
    logits: np.ndarray, labels: np.ndarray, num_classes: int, to_class: np.ndarray | None = None
) -> np.ndarray:
    """Counts ``[true, predicted]``; a sample whose logits are all non-finite counts in no column (it is wrong).

    ``to_class`` maps each output of the head to a row of the matrix (a 1000-way ImageNet head scored on a few of its
    classes: the dataset's classes, then one row for every other output); labels are head indices too.
    """
    finite = np.isfinite(logits).any(axis=1)
    pred = np.argsort(-np.where(np.isfinite(logits), logits, -np.inf), axis=1, kind="stable")[:, 0]
    if to_class is not None:
        pred, labels = to_class[pred], to_class[labels]
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels[finite], pred[finite]), 1)
    return cm


def per_class_accuracy(cm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class with no held-out image); the denominator counts every sample."""
    support = np.bincount(labels, minlength=cm.shape[0]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def write_accuracy_artifacts(
    logits: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    out_dir: Path,
    title: str,
    head_index: tuple[int, ...] | None = None,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Per-class accuracy (CSV) and a confusion-matrix picture (PNG); returns ``{name: file}`` and summary metrics.

    ``head_index`` gives the head output of each class when the head is larger than the dataset's classes (ImageNet):
    predictions of any other output count in a last column, ``(other class)``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    to_class = None
    if head_index is not None:
        to_class = np.full(logits.shape[1], len(classes), dtype=np.int64)
        to_class[list(head_index)] = np.arange(len(classes))
        cm = confusion_matrix(logits, labels, len(classes) + 1, to_class)
        labels, classes = to_class[labels], (*classes, "(other class)")
    else:
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
