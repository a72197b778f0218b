"""Diagnosis: why a scratch-weight INT8 model's logits can disagree with FP32's without any runtime being wrong.

``bench.runtimes`` checks each fast INT8 artifact against ORT FP32 by the correlation of their logits on random
images. With random (scratch) weights some nets carry almost no input-dependent signal to the logits: each block
shrinks the activations, so the logits are nearly constant and 8-bit activations cannot keep what little varies.
Per model this prints where the signal goes (activation std after the stem and after the blocks, FP32 logit std)
and splits the INT8 disagreement between the quantization recipe and the lowering: ExecuTorch's pt2e XNNPACK recipe
run as the quantized torch graph (before lowering) against FP32, and the lowered ``.pte`` against that graph.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from bench import _common as c
from bench._report import table
from evaluators.runners.base import ArrayCalibration
from evaluators.runners.executorch import ExecuTorchXnnpackRunner
from evaluators.runners.torch_cpu import save_torch_artifact

MODELS = ("efficientnet_b0.ra_in1k", "mobilenetv3_large_100.ra_in1k", "resnet18.tv_in1k")
SIZE = 224


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def diagnose(name: str, work: Path) -> dict[str, object]:
    model = c.model(name)
    fp32 = c.onnx_at(model, SIZE, work / "fp32")
    save_torch_artifact(model, name, 1000, fp32.parent)
    cal, x = ArrayCalibration(c.images(8, SIZE, seed=1)), c.images(4, SIZE, seed=3)
    stds: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: stds.__setitem__(n, float(o.std())))  # type: ignore[misc]
        for n, m in model.named_children()
        if n in ("conv_stem", "conv1", "blocks", "layer4", "features")
    ]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    runner = ExecuTorchXnnpackRunner(precision="int8", threads=1)
    example = (torch.zeros(2, 3, SIZE, SIZE),)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=runner.max_batch)},)
    quantized = runner._quantize(model, example, dynamic, cal)
    with torch.no_grad():
        y_q = quantized(torch.from_numpy(x)).numpy()
    y_pte = runner.predict(runner.load(runner.prepare(fp32, work / "pte", cal)), x)
    return {
        "model": name,
        "activation std (first → last stage)": " → ".join(f"{v:.2g}" for v in stds.values()),
        "FP32 logit std": float(ref.std()),
        "corr: quantized torch graph vs FP32": corr(y_q, ref),
        "corr: .pte vs quantized torch graph": corr(y_pte, y_q),
        "corr: .pte vs FP32": corr(y_pte, ref),
    }


def main() -> None:
    p = c.parser(__doc__)
    args = p.parse_args()
    models = MODELS[:1] if args.quick else MODELS
    with tempfile.TemporaryDirectory() as tmp:
        rows = [diagnose(m, Path(tmp) / m) for m in models]
    body = (
        f"Scratch (random) weights, 1000 classes, {SIZE}x{SIZE}, 4 random images; INT8 = ExecuTorch's pt2e "
        "XNNPACKQuantizer recipe (symmetric per-channel, classifier float, 8 random calibration images). Where the "
        "quantized torch graph already disagrees with FP32, the recipe lost the signal before any lowering; where "
        "the `.pte` agrees with that graph, XNNPACK ran what it was given. A logit check on scratch weights is only "
        "meaningful where the FP32 logits vary; the INT8 top-1 drop on fine-tuned weights (benchmark 3) is the "
        "accuracy figure.\n\n" + table(rows, list(rows[0]))
    )
    c.emit("logit_signal", "INT8 logit check on scratch weights: recipe or runtime?", body, args.no_write)


if __name__ == "__main__":
    main()
