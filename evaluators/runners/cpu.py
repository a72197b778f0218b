"""``cpu``: onnxruntime on the CPU, FP32, all cores (the server runner)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import INPUT_NAME, Availability, CalibrationData, cpu_info, software_versions


@dataclass
class OnnxCpuRunner:
    threads: int = 0  # 0: onnxruntime's default, all physical cores
    name: str = "cpu"
    precision: str = "fp32"

    def availability(self) -> Availability:
        import onnxruntime as ort

        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider")
        return Availability(True)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        return fp32_onnx

    def session_options(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return opts

    def load(self, artifact: Path) -> Any:
        import onnxruntime as ort

        from evaluators.onnx_safety import check_onnx_file

        check_onnx_file(artifact)  # external data leaving the model's folder is refused before onnxruntime reads it
        return ort.InferenceSession(str(artifact), self.session_options(), providers=["CPUExecutionProvider"])

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {INPUT_NAME: x})[0])

    def synchronize(self) -> None:  # onnxruntime CPU calls are synchronous
        return None

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        return {
            **cpu_info(),
            **software_versions(),
            "runner": self.name,
            "provider": "CPUExecutionProvider",
            "precision": self.precision,
            "threads": str(self.threads or "all"),
            "batch_size": str(batch_size),
            "image_size": str(image_size),
        }
