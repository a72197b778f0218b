"""torch -> ONNX export and the ONNX-vs-torch parity check."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluators.runners.base import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model could not be exported to ONNX."""


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path  # the .onnx file; external data, if any, sits beside it (``model.onnx.data``)

    @property
    def files(self) -> list[Path]:
        """The graph and its external data; other files beside it (the torch artifact) are not part of it."""
        return sorted(p for p in self.path.parent.iterdir() if p.is_file() and p.name.startswith(self.path.name))

    @property
    def bytes(self) -> int:
        """Size on disk, the external-data file included."""
        return sum(p.stat().st_size for p in self.files)


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    atol: float
    rtol: float
    ok: bool

    def to_metrics(self) -> dict[str, float]:
        return {"onnx_parity_max_abs_diff": self.max_abs_diff, "onnx_parity_ok": float(self.ok)}


def export_onnx(model: torch.nn.Module, example: np.ndarray, out_dir: str | Path) -> OnnxArtifact:
    """Export with torch's dynamo exporter, batch dimension dynamic, into an empty ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    path = out / "model.onnx"
    # two examples: a batch of one lets torch.export specialise the batch dimension (ConvNeXt then fails to export)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate([example[:1]] * 2)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    chatter = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter):
            torch.onnx.export(
                model.eval(),
                (x,),
                str(path),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                external_data=True,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    if not path.exists():
        raise ExportError(f"ONNX export wrote no file at {path}")
    return OnnxArtifact(path)


def check_parity(
    model: torch.nn.Module, reference_logits: np.ndarray, x: np.ndarray, atol: float = 1e-3, rtol: float = 1e-3
) -> ParityResult:
    """Compare torch logits on ``x`` with ``reference_logits`` (the ONNX runner's) under explicit tolerances."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(expected - reference_logits))) if expected.size else 0.0
    ok = bool(np.all(np.abs(expected - reference_logits) <= atol + rtol * np.abs(expected))) and np.isfinite(diff)
    return ParityResult(diff, atol, rtol, ok)
