"""Benchmark: the runtimes teams deploy, on this CPU, at batch 1 and 224x224 (issue 16's table).

ORT FP32 (the ``cpu`` runner), ORT INT8 (``edge``), OpenVINO fp32 / bf16 / int8 (NNCF), ExecuTorch + XNNPACK fp32 /
int8 and LiteRT fp32 / int8 (run from ``.venv-litert``, ``make litert``; elsewhere its rows say it is unavailable),
each at 1 and 2 threads, speed-up over ORT FP32 at the same thread count, for the demo profile's models and
ResNet-50. Scratch (random) weights: speed only,
no accuracy. Every artifact is prepared once per model with the runner's own ``prepare`` (INT8 calibrated on random
images at 224); timing is interleaved: ``--rounds`` rounds, each timing every runner in a rotated order, the samples
of all rounds pooled into one p50. ExecuTorch's XNNPACK thread pool is process-wide, so runners are loaded thread
count by thread count.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import _common as c
from bench._report import table
from catalog import get_profile
from evaluators.latency import LatencySettings, measure
from evaluators.runners.base import ArrayCalibration, Runner, cpu_info
from evaluators.runners.cpu import OnnxCpuRunner
from evaluators.runners.edge import OnnxEdgeInt8Runner
from evaluators.runners.executorch import ExecuTorchXnnpackRunner
from evaluators.runners.litert import LiteRtRunner
from evaluators.runners.openvino import OpenVinoRunner
from evaluators.runners.torch_cpu import save_torch_artifact

MODELS = (*get_profile("demo").models, "resnet50.tv_in1k")
THREADS = (1, 2)
SIZE = 224
BASELINE = "ORT FP32"
P50_OUT = ".cnnselect/bench-runtimes/p50.json"  # bench.host_answer compares cnnselect's answers with it
VERSION_KEYS = ("onnxruntime", "openvino", "nncf", "executorch", "torchao", "litert_torch", "ai_edge_litert", "torch")


def runners(threads: int) -> dict[str, Runner]:
    return {
        BASELINE: OnnxCpuRunner(threads=threads),
        "ORT INT8": OnnxEdgeInt8Runner(threads=threads),
        "OpenVINO FP32": OpenVinoRunner(precision="fp32", threads=threads),
        "OpenVINO BF16": OpenVinoRunner(precision="bf16", threads=threads),
        "OpenVINO INT8": OpenVinoRunner(precision="int8", threads=threads),
        "ExecuTorch XNNPACK FP32": ExecuTorchXnnpackRunner(precision="fp32", threads=threads),
        "ExecuTorch XNNPACK INT8": ExecuTorchXnnpackRunner(precision="int8", threads=threads),
        "LiteRT FP32": LiteRtRunner(precision="fp32", threads=threads),
        "LiteRT INT8": LiteRtRunner(precision="int8", threads=threads),
    }


def prepare_all(name: str, work: Path, n_cal: int) -> tuple[dict[str, Path], dict[str, str]]:
    """Every runner's artifact for one model (thread count does not change an artifact); failures as text."""
    model = c.model(name)
    fp32 = c.onnx_at(model, SIZE, work / "fp32")
    save_torch_artifact(model, name, 1000, fp32.parent)
    calibration = ArrayCalibration(c.images(n_cal, SIZE, seed=1))
    artifacts, errors = {}, {}
    for label, runner in runners(THREADS[0]).items():
        avail = runner.availability()
        if not avail.available:
            errors[label] = f"unavailable: {avail.reason}"
            continue
        try:
            artifacts[label] = runner.prepare(fp32, work / label.replace(" ", "-"), calibration)
        except Exception as exc:  # a failure is data: the row says which runtime could not convert the model
            errors[label] = f"{type(exc).__name__}: {exc}"[:200]
        print(f"{name}: {label} {'prepared' if label in artifacts else errors[label]}", flush=True)
    return artifacts, errors


def logit_check(logits: np.ndarray, reference: np.ndarray) -> str:
    """Pearson correlation of a runtime's logits with ORT FP32's: a collapsed INT8 model would be timed all the same."""
    if not np.isfinite(logits).all():
        return "non-finite"
    if logits.std() == 0:
        return "collapsed (constant)"
    return f"{np.corrcoef(logits.ravel(), reference.ravel())[0, 1]:.3f}"


def time_interleaved(
    artifacts: dict[str, Path], threads: int, rounds: int, s: LatencySettings
) -> tuple[dict[str, float], dict[str, dict[str, str]], dict[str, np.ndarray]]:
    """p50 ms per runner at ``threads``, all runners timed in each round; fingerprints; logits of 8 check images."""
    x1, x_check = c.images(1, SIZE, seed=2), c.images(8, SIZE, seed=3)
    loaded: dict[str, tuple[Runner, Any]] = {}
    for label, runner in runners(threads).items():
        if label in artifacts:
            loaded[label] = (runner, runner.load(artifacts[label]))
    logits = {label: runner.predict(session, x_check) for label, (runner, session) in loaded.items()}
    samples: dict[str, list[float]] = {label: [] for label in loaded}
    order = list(loaded)
    for r in range(rounds):
        for label in order[r % len(order) :] + order[: r % len(order)]:
            runner, session = loaded[label]
            result = measure(lambda: runner.predict(session, x1), runner.synchronize, 1, s)  # noqa: B023
            samples[label].extend(result.samples_ms)
    fps = {label: runner.fingerprint(1, SIZE) for label, (runner, _) in loaded.items()}
    return {label: statistics.median(v) for label, v in samples.items()}, fps, logits


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--models", help=f"comma-separated (default: {', '.join(MODELS)})")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per thread count (--quick: 2)")
    p.add_argument("--shared-machine", action="store_true", help="say in the block that other work ran meanwhile")
    p.add_argument("--p50-out", default=P50_OUT, help="each runner's p50 per model and thread count, as JSON")
    args = p.parse_args()
    models = args.models.split(",") if args.models else MODELS
    rounds = 2 if args.quick else args.rounds
    n_cal = 8 if args.quick else 32
    if args.quick:
        s = LatencySettings(warmup=3, min_iters=10, min_seconds=0.2, max_seconds=3.0, attempts=1, large_batch=0)
    else:
        s = LatencySettings(warmup=10, min_iters=50, min_seconds=1.0, max_seconds=10.0, attempts=1, large_batch=0)
    load_before = os.getloadavg()[0]
    rows: list[dict[str, object]] = []
    by_runner: dict[str, dict[str, dict[int, float]]] = {}  # model -> runner name -> threads -> p50 ms
    precisions: dict[str, str] = {}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            artifacts, errors = prepare_all(name, Path(tmp) / name, n_cal)
            p50: dict[int, dict[str, float]] = {}
            checks: dict[str, str] = {}
            for t in THREADS:
                p50[t], fps, logits = time_interleaved(artifacts, t, rounds, s)
                if t == THREADS[0]:
                    checks = {k: logit_check(v, logits[BASELINE]) for k, v in logits.items() if BASELINE in logits}
                for label, fp in fps.items():
                    versions.update({k: fp[k] for k in VERSION_KEYS if k in fp})
                    if "execution_precision" in fp:
                        precisions[label] = f"{fp['execution_precision']} ({fp.get('runtime_precisions', '')})"
                print(name, t, {k: round(v, 2) for k, v in p50[t].items()}, flush=True)
            for label, runner in runners(1).items():
                by_runner.setdefault(name, {})[runner.name] = {t: p50[t][label] for t in THREADS if label in p50[t]}
                row: dict[str, object] = {"model": name, "runtime": label}
                for t in THREADS:
                    ms, base = p50[t].get(label), p50[t].get(BASELINE)
                    row[f"p50 ms @{t}t"] = ms if ms is not None else errors.get(label, "n/a")
                    row[f"× ORT FP32 @{t}t"] = f"{base / ms:.2f}×" if ms and base else "-"
                row["logit corr. vs ORT FP32"] = checks.get(label, "-")
                rows.append(row)
    out = Path(args.p50_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_info(), "p50_ms": by_runner}, indent=1))
    load_after, niceness = os.getloadavg()[0], os.nice(0)
    cpu = cpu_info()
    import openvino as ov

    caps = ", ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    shared = (
        " **The machine was shared with other work during the run** (other engineers' jobs on the same 2 cores, so"
        " 2 threads competed with them): absolute figures are noisy; interleaving keeps the ratios comparable, not"
        " exact."
        if args.shared_machine
        else ""
    )
    body = (
        f"Batch 1, {SIZE}x{SIZE}, scratch (random) weights, 1000 classes: speed only. CPU: {cpu['cpu_model']} "
        f"(ISA {cpu['cpu_isa']}, {cpu['cpu_cores']} cores; OpenVINO CPU capabilities {caps}). Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ". Each runtime's artifact made by its runner's `prepare` "
        f"(INT8: ORT static QDQ, NNCF PTQ, XNNPACK pt2e, LiteRT pt2e; each keeps the classifier float; calibrated on "
        f"{n_cal} random images); timing interleaved, {rounds} rounds per thread count, each round timing every "
        f"runtime (warm-up {s.warmup}, at least {s.min_iters} runs / {s.min_seconds} s, at most {s.max_seconds} s), "
        f"p50 of the pooled samples. Speed-up = ORT FP32 p50 / runtime p50 at the same thread count. Logit corr.: "
        f"Pearson correlation of the runtime's logits with ORT FP32's on 8 random images (1 thread), a check that a "
        f"fast INT8 model is not a collapsed one. OpenVINO's execution "
        f"precision as read back from the compiled model: "
        + "; ".join(f"{k}: {v}" for k, v in sorted(precisions.items()))
        + ". ExecuTorch XNNPACK and LiteRT are measured on this x86 host (`measured_on: host`), not on a phone."
        + shared
        + f" Machine load: 1-minute load average {load_before:.1f} before, {load_after:.1f} after, on "
        + f"{cpu['cpu_cores']} cores; this process ran at niceness {niceness}"
        + (" (other work had priority over it)" if niceness > 0 else "") + ".\n\n"
        + table(rows, list(rows[0]))
    )  # fmt: skip
    c.emit(
        "runtimes", "Runtimes teams deploy: ORT, OpenVINO, ExecuTorch, LiteRT (batch 1, 224x224)", body, args.no_write
    )


if __name__ == "__main__":
    main()
