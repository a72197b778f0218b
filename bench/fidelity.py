"""Benchmark 1, fidelity: cnnselect's reported p50 against a plain onnxruntime timing loop, same process, same session.

Rounds alternate plain loop and cnnselect's ``measure`` on one session, and which of the two goes first alternates
too (ABBA), so drift and the after-effects of the previous loop hit both alike. Each round's two p50s are taken back
to back, so their ratio is a paired comparison: the median of the per-round ratios must lie within 1.00 +- 0.05 (on
a shared 2-core VM, p50 moves 5-20% between sessions and minutes; pairing cancels what both sides see).
"""

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
    args = c.parser(__doc__).parse_args()
    size, rounds = (96, 2) if args.quick else (224, 12)
    s = c.settings(args.quick)
    runner = get_runner("cpu")
    rows = []
    for name in MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            sess = runner.load(c.onnx_at(c.model(name), size, Path(tmp)))
            x = c.images(1, size)
            ours, plain = [], []
            iters = 0  # set by round 0, which measures with cnnselect first
            for i in range(rounds):
                plain_first = i % 2 == 1  # ABBA: each side goes first in half of the rounds
                if plain_first:
                    plain.append(c.plain_p50(lambda: sess.run(None, {"input": x}), iters))  # noqa: B023
                res = measure(lambda: runner.predict(sess, x), runner.synchronize, 1, s)  # noqa: B023
                ours.append(res.percentile(50))
                iters = len(res.samples_ms)  # the plain loop runs as many iterations as cnnselect last took
                if not plain_first:
                    plain.append(c.plain_p50(lambda: sess.run(None, {"input": x}), iters))  # noqa: B023
        ratios = [o / p for o, p in zip(ours, plain, strict=True)]
        ratio = statistics.median(ratios)
        rows.append(
            {
                "model": name,
                "cnnselect p50 ms": statistics.median(ours),
                "plain loop p50 ms": statistics.median(plain),
                "ratio (median of rounds)": ratio,
                "round ratios min-max": f"{min(ratios):.3f}-{max(ratios):.3f}",
                "within 1.00±0.05": "yes" if abs(ratio - 1) <= 0.05 else "NO",
            }
        )
    body = (
        f"onnxruntime CPU runner (FP32, all cores), batch 1, {size}x{size}, seeded random weights (timing does not "
        f"depend on them); {rounds} rounds per model, the side that goes first alternating (ABBA); each round's two "
        f"p50s are taken back to back and compared (the plain loop runs as many iterations as cnnselect took), and "
        f"the median of the per-round ratios is the figure. Target: ratio within 1.00 ± 0.05.\n\n"
        + table(rows, list(rows[0]))
    )
    c.emit("fidelity", "1. Latency fidelity: cnnselect p50 vs a plain onnxruntime loop", body, args.no_write)


if __name__ == "__main__":
    main()
