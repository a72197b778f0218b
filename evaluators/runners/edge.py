"""``edge``: onnxruntime, INT8 static quantization (QDQ) calibrated on the ``calibration`` split, one thread.

One intra-op thread stands in for a single edge core; ``threads`` is a runner setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import INPUT_NAME
from evaluators.runners.cpu import OnnxCpuRunner


class _Calibration:
    """onnxruntime's ``CalibrationDataReader``: yields the calibration images in small batches."""

    def __init__(self, x: np.ndarray, batch_size: int = 16) -> None:
        self._batches = iter([x[i : i + batch_size] for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


@dataclass
class OnnxEdgeInt8Runner(OnnxCpuRunner):
    threads: int = 1
    name: str = "edge"
    precision: str = "int8"
    per_channel: bool = True

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: np.ndarray | None) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if calibration is None or len(calibration) == 0:
            raise ValueError("the edge runner needs calibration images (the dataset's 'calibration' split)")
        work_dir.mkdir(parents=True, exist_ok=True)
        import onnx

        inline = work_dir / "model.fp32-inline.onnx"  # the quantizer's pre-processing cannot follow external data
        onnx.save(onnx.load(str(fp32_onnx)), str(inline))
        pre = work_dir / "model.pre.onnx"
        out = work_dir / "model.int8.onnx"
        quant_pre_process(str(inline), str(pre), skip_symbolic_shape=True)
        inline.unlink(missing_ok=True)
        quantize_static(
            str(pre),
            str(out),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=self.per_channel,
            calibrate_method=CalibrationMethod.MinMax,
        )
        pre.unlink(missing_ok=True)
        return out

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        fp = super().fingerprint(batch_size, image_size)
        fp["quantization"] = "static-qdq-u8s8" + ("-per-channel" if self.per_channel else "")
        return fp

    def load(self, artifact: Path) -> Any:
        return super().load(artifact)
