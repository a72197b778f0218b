"""Benchmark: what logging one evaluated model costs, by input resolution, with and without MLflow's input example.

One small timm model (``test_efficientnet``, so the model's own bytes stay small) exported at each resolution, logged
to a fresh local store (SQLite, local artifacts) three ways: ``mlflow.onnx.log_model`` with the signature and the
input example (one preprocessed image, as cnnselect logged it before), the same with the signature only, and
cnnselect's whole ``registry.writes.log_evaluation`` (run, params, metrics, inputs, model, version). For each: the
median seconds of ``--reps`` logs, and the bytes each one added to the store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import _common as c
from bench._report import table

SIZES = (32, 224, 600)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _timed(fn: Callable[[int], object], home: Path, reps: int) -> tuple[float, float]:
    """Median seconds of ``fn(i)`` over ``reps`` calls (after one untimed), and the mean bytes a call adds."""
    fn(0)
    seconds, before = [], _bytes(home)
    for i in range(1, reps + 1):
        t0 = time.perf_counter()
        fn(i)
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), (_bytes(home) - before) / reps


def measure(size: int, reps: int, tmp: Path) -> list[dict[str, object]]:
    import mlflow
    import mlflow.onnx
    import onnx
    import torch
    from mlflow.models import infer_signature

    from registry.settings import Settings
    from registry.tracking import DatasetRef, Evaluation
    from registry.writes import ensure_experiment, log_evaluation

    model = c.model("test_efficientnet.r160_in1k", num_classes=10)
    x = c.images(1, size)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    path = c.onnx_at(model, size, tmp / f"onnx-{size}")
    home = tmp / f"home-{size}"
    settings = Settings(home=home)
    exp_id = ensure_experiment(settings, "bench")
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    signature = infer_signature(x, y)

    def flavour(example: np.ndarray | None) -> Callable[[int], object]:
        def log(_: int) -> object:
            with mlflow.start_run(experiment_id=exp_id):
                return mlflow.onnx.log_model(onnx.load(str(path)), name="model", signature=signature,
                                             input_example=example, pip_requirements=["onnxruntime"])  # fmt: skip

        return log

    ds = DatasetRef("bench", "d" * 64, str(tmp), tuple("0123456789"), "h" * 64, 450)
    metrics = {"top1": 0.9, "top1_ci_low": 0.87, "latency_p95_ms": 2.0, "params_m": 1.0, "size_mb": 0.5}

    def evaluation(i: int) -> object:
        ev = Evaluation("bench", "efficientnet", "cpu", "fp32", ds, f"k{size}-{i}", "bench", {"cpu_model": "x"},
                        "fp", "w" * 64, "scratch", path, x, y, {}, dict(metrics))  # fmt: skip
        return log_evaluation(settings, ev)

    rows = []
    for what, fn in (
        ("mlflow.onnx.log_model, signature and input example", flavour(x)),
        ("mlflow.onnx.log_model, signature only", flavour(None)),
        ("registry.writes.log_evaluation (cnnselect: signature only)", evaluation),
    ):
        seconds, added = _timed(fn, home, reps)
        rows.append({"px": size, "what": what, "median s": seconds, "MB added each": added / 1e6})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    sizes = SIZES[:2] if args.quick else SIZES
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rows += measure(size, 1 if args.quick else args.reps, Path(tmp))
    body = (
        f"A small model (`test_efficientnet`, 10 classes) exported at each resolution, logged to a fresh local store "
        f"(SQLite, local artifacts); median of {1 if args.quick else args.reps} logs after one untimed, and the "
        "bytes each log added to the store. MLflow keeps an input example twice as JSON (`input_example.json`, "
        "`serving_input_example.json`) and validates it by loading the model through pyfunc and predicting it: "
        "one preprocessed image is 3 x H x W floats. cnnselect logs the signature only (a batch of any size, "
        "float32, 3 x H x W), which `tests/registry/test_registry_store.py` serves through MLflow's pyfunc.\n\n"
    )
    c.emit("log-cost", "What logging one model costs, by resolution", body + table(rows, list(rows[0])), args.no_write)


if __name__ == "__main__":
    main()
