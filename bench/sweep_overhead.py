"""Benchmark 4, sweep overhead: a sweep's wall time against the sum of its models' pure export + inference time.

"Pure" is the bare work done in a plain loop on the same arrays: ONNX export, the runner's ``prepare`` (INT8
quantization for ``edge``), session load, held-out inference and the same latency measurement. The sweep is
``evaluate_model`` per model (data loading, size counting, parity, accuracy artifacts, MLflow logging included).
Target: sweep / pure <= 1.15.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import _common as c
from bench._report import table
from catalog import get_entry, get_profile
from catalog.weights import ScratchSource
from cnnselect.pipeline import evaluate_model, preprocess_for
from evaluators.accuracy import predict_all
from evaluators.data import load_manifest, load_split, write_digits
from evaluators.export import export_onnx
from evaluators.latency import measure_batches
from evaluators.runners import get_runner
from registry.settings import Settings


def pure_seconds(name: str, root: Path, runners: list[str], image_size: int, work: Path, s) -> float:
    manifest = load_manifest(root)
    entry = get_entry(name)
    pre = preprocess_for(entry, image_size)
    x_held, _ = load_split(manifest, "heldout", pre)
    x_cal, _ = load_split(manifest, "calibration", pre)
    model = ScratchSource(0).pull(entry, len(manifest.classes)).model
    t0 = time.perf_counter()
    fp32 = export_onnx(model, x_held, work / "fp32").path
    for r in runners:
        runner = get_runner(r)
        sess = runner.load(runner.prepare(fp32, work / r, x_cal))
        predict_all(lambda b: runner.predict(sess, b), x_held)  # noqa: B023
        measure_batches(lambda b: runner.predict(sess, b), runner.synchronize, x_held, s)  # noqa: B023
    return time.perf_counter() - t0


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--profile", default="demo")
    p.add_argument("--runners", default="cpu,edge")
    args = p.parse_args()
    profile = get_profile("smoke" if args.quick else args.profile)
    runners = ["cpu"] if args.quick else args.runners.split(",")
    s = c.settings(args.quick, large_batch=8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_digits(Path(tmp) / "digits").root
        work = Path(tmp) / "pure"
        pure = {m: pure_seconds(m, root, runners, profile.image_size, work / m, s) for m in profile.models}
        settings = Settings(home=Path(tmp) / "home")
        t0 = time.perf_counter()
        for m in profile.models:
            t1 = time.perf_counter()
            outs = evaluate_model(m, profile, root, tuple(runners), "bench", "scratch", settings, lambda _: None, s)
            rows.append(
                {
                    "model": m,
                    "pure s": pure[m],
                    "pipeline s": time.perf_counter() - t1,
                    "status": ",".join(o.status for o in outs),
                }
            )
        wall = time.perf_counter() - t0
    ratio = wall / sum(pure.values())
    verdict = "target met" if ratio <= 1.15 else "target NOT met"
    body = (
        f"Profile `{profile.name}` ({len(profile.models)} models, {profile.image_size}x{profile.image_size}), runners "
        f"{', '.join(runners)}, weights `scratch` (training is excluded from both sides), latency at batch 1 and 8, "
        f"local SQLite MLflow store. Sweep wall {wall:.1f} s vs pure {sum(pure.values()):.1f} s: ratio **{ratio:.3f}** "
        f"({verdict}; target ≤ 1.15).\n\n" + table(rows, list(rows[0]))
    )
    c.emit("sweep-overhead", "4. Sweep overhead", body, args.no_write)


if __name__ == "__main__":
    main()
