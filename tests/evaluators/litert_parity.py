"""Run inside .venv-litert (tests/evaluators/test_litert.py): both LiteRT runners on a tiny timm model, as JSON.

Per runner: the artifact's kind, how many of its tensors are int8, the max abs difference and logit correlation
against eager torch, top-1 agreement, and top-1 against labels recomputed from the ``.tflite`` itself.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from catalog import get_entry
from catalog.weights import create_model
from evaluators.export import export_onnx
from evaluators.runners import get_runner
from evaluators.runners.base import ArrayCalibration
from evaluators.runners.torch_cpu import save_torch_artifact


def main(name: str, size: int) -> dict[str, dict[str, object]]:
    torch.manual_seed(0)
    model = create_model(get_entry(name), 10).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    labels = ref.argmax(1)
    labels[:4] = (labels[:4] + 1) % 10  # four wrong labels: top-1 read from the artifact is 12/16, not 1.0
    tmp = Path(tempfile.mkdtemp())
    onnx = export_onnx(model, x[:1], tmp / "fp32").path
    save_torch_artifact(model, name, 10, onnx.parent)
    out: dict[str, dict[str, object]] = {}
    for runner_name in ("litert-fp32", "litert-int8"):
        r = get_runner(runner_name)
        art = r.prepare(onnx, tmp / runner_name, ArrayCalibration(x[8:], labels[8:]))
        session = r.load(art)
        y = np.concatenate([r.predict(session, x[i : i + 1]) for i in range(len(x))])
        dtypes = [np.dtype(t["dtype"]).name for t in session.interpreter.get_tensor_details()]
        out[runner_name] = {
            "artifact": art.name,
            "int8_tensors": dtypes.count("int8"),
            "max_abs": float(np.abs(y - ref).max()),
            "corr": float(np.corrcoef(y.ravel(), ref.ravel())[0, 1]),
            "agree": float((y.argmax(1) == ref.argmax(1)).mean()),
            "top1": float((y.argmax(1) == labels).mean()),
            "dtype": str(y.dtype),
            "fingerprint": r.fingerprint(1, size),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
