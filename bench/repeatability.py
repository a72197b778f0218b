"""Benchmark 2, repeatability: coefficient of variation of p50 across 5 repeats per model (fresh session each)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench import _common as c
from bench._report import table
from evaluators.latency import measure
from evaluators.runners import get_runner

MODELS = ("resnet18", "mobilenetv3_large_100", "efficientnet_b0")


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--runners", default="cpu,edge")
    args = p.parse_args()
    size, repeats = (96, 3) if args.quick else (224, 5)
    s = c.settings(args.quick)
    rows = []
    for name in MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = c.onnx_at(c.model(name), size, Path(tmp) / "fp32")
            for rname in args.runners.split(","):
                runner = get_runner(rname)
                artifact = runner.prepare(fp32, Path(tmp) / rname, c.images(32, size, seed=1))
                x = c.images(1, size)
                p50s, stable = [], 0
                for _ in range(repeats):
                    sess = runner.load(artifact)
                    res = measure(lambda: runner.predict(sess, x), runner.synchronize, 1, s)  # noqa: B023
                    p50s.append(res.percentile(50))
                    stable += res.stable
                mean = statistics.mean(p50s)
                rows.append(
                    {
                        "model": name,
                        "runner": rname,
                        "p50 ms (mean)": mean,
                        "p50 min": min(p50s),
                        "p50 max": max(p50s),
                        "CoV of p50": statistics.stdev(p50s) / mean,
                        "stable repeats": f"{stable}/{repeats}",
                    }
                )
    body = (
        f"Batch 1, {size}x{size}, seeded random weights; {repeats} repeats per (model, runner), each with a fresh "
        "session and cnnselect's full method (warm-up, min iterations and duration, window stability).\n\n"
        + table(rows, list(rows[0]))
    )
    c.emit("repeatability", "2. Repeatability: CoV of p50 across repeats", body, args.no_write)


if __name__ == "__main__":
    main()
