"""``litert-fp32`` / ``litert-int8``: LiteRT (formerly TensorFlow Lite), the runtime Android teams ship.

Conversion needs ``litert-torch`` (the PyTorch -> ``.tflite`` converter) and running needs ``ai-edge-litert`` (the
interpreter); both come with the ``cnnselect[litert]`` extra. ``litert-torch`` pins torch < 2.15 and, through
``xdsl``, typing-extensions < 4.13 where Airflow needs >= 4.14, so the extra is not a default dependency and does not
go into the Airflow venv: ``make litert`` builds ``.venv-litert``, layered over ``.venv``, whose ``cnnselect`` (and a
worker started from it) runs these runners. Where either package is missing, ``availability()`` says so and the
pipeline records the runner as unavailable.

Like ExecuTorch, LiteRT deploys the torch model (the torch artifact beside the ONNX export), converted at batch 1 with
the torch NCHW signature kept. INT8 is pt2e static quantization with litert-torch's ``PT2EQuantizer`` (symmetric,
per-channel weights) calibrated on the streamed calibration split, ``nn.Linear`` (the classifier) left in float. A
model whose input or output tensor is integer is fed through the tensor's own scale and zero point: the input is
quantized, the output dequantized, so ``predict`` always takes and returns float32.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import (
    Availability,
    CalibrationData,
    cpu_info,
    require_available,
    require_calibration,
    software_versions,
)
from evaluators.runners.executorch import onnx_input_shape
from evaluators.runners.torch_cpu import find_torch_artifact, load_torch_model

PRECISIONS = ("fp32", "int8")
TFLITE_NAME = "model.tflite"
INSTALL_HINT = "install cnnselect[litert] (`make litert` builds .venv-litert, whose cnnselect runs it)"


def _missing(module: str) -> str | None:
    """The import error of ``module`` as text, or None when it imports."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} ({exc})"
    return None


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float input -> the input tensor's integer type through its (scale, zero point); float tensors pass."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An integer output tensor -> float32 through its (scale, zero point); float tensors pass."""
    if not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


@dataclass
class _Session:
    interpreter: Any
    input: dict[str, Any]
    output: dict[str, Any]


@dataclass
class LiteRtRunner:
    precision: str = "fp32"
    threads: int = 0  # the interpreter's num_threads; 0: LiteRT's default
    name: str = ""
    calibration_batch: int = 8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"litert runner precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        self.name = self.name or f"litert-{self.precision}"

    def availability(self) -> Availability:
        missing = [m for m in (_missing("litert_torch"), _missing("ai_edge_litert.interpreter")) if m]
        if missing:
            return Availability(False, f"unavailable: {INSTALL_HINT} (missing {'; '.join(missing)})")
        return Availability(True)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        require_available(self)
        import litert_torch
        import torch

        if self.precision == "int8":
            require_calibration(self, calibration)
        model = load_torch_model(find_torch_artifact(fp32_onnx))
        example = (torch.zeros(1, *onnx_input_shape(fp32_onnx)),)
        work_dir.mkdir(parents=True, exist_ok=True)
        out = work_dir / TFLITE_NAME
        # the converter prints its progress to stdout: to stderr, so `cnnselect ... --json` stays one JSON document
        with contextlib.redirect_stdout(sys.stderr):
            if self.precision == "int8" and calibration is not None:
                model, quant_config = self._quantize(model, example, calibration)
                edge_model = litert_torch.convert(model, example, quant_config=quant_config)
            else:
                edge_model = litert_torch.convert(model, example)
            edge_model.export(str(out))
        return out

    def _quantize(self, model: Any, example: tuple[Any, ...], calibration: CalibrationData) -> tuple[Any, Any]:
        import torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        quantizer.set_module_type(torch.nn.Linear, None)  # the classifier stays float
        observed = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        with torch.no_grad():
            for batch in calibration.batches(self.calibration_batch):
                for image in batch:  # the graph was exported at batch 1
                    observed(torch.from_numpy(np.ascontiguousarray(image[None])))
        return convert_pt2e(observed, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)

    def load(self, artifact: Path) -> Any:
        require_available(self)
        from ai_edge_litert.interpreter import Interpreter

        if artifact.suffix != ".tflite":
            raise FileNotFoundError(f"{artifact} is not a LiteRT model (.tflite)")
        interpreter = Interpreter(model_path=str(artifact), num_threads=self.threads or None)
        interpreter.allocate_tensors()
        return _Session(interpreter, interpreter.get_input_details()[0], interpreter.get_output_details()[0])

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        it, inp, out = session.interpreter, session.input, session.output
        planned = int(inp["shape"][0]) or 1
        outs = []
        for i in range(0, len(x), planned):
            chunk = x[i : i + planned]
            if len(chunk) != planned:  # the tail of a batch: resize once, back for the next call
                it.resize_tensor_input(inp["index"], [len(chunk), *inp["shape"][1:]])
                it.allocate_tensors()
            it.set_tensor(inp["index"], quantize_input(np.ascontiguousarray(chunk), inp))
            it.invoke()
            outs.append(dequantize_output(np.array(it.get_tensor(out["index"])), out))
            if len(chunk) != planned:
                it.resize_tensor_input(inp["index"], list(inp["shape"]))
                it.allocate_tensors()
        return np.concatenate(outs)

    def synchronize(self) -> None:  # invoke() returns when the graph has run
        return None

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        def installed(dist: str) -> str:
            try:
                return version(dist)
            except PackageNotFoundError:
                return "absent"

        fp = {
            **cpu_info(),
            **software_versions(),
            "litert_torch": installed("litert-torch"),
            "ai_edge_litert": installed("ai-edge-litert"),
            "runner": self.name,
            "provider": "litert-interpreter-cpu",
            "precision": self.precision,
            "threads": str(self.threads or "default"),
            "batch_size": str(batch_size),
            "image_size": str(image_size),
            "measured_on": "host",
        }
        if self.precision == "int8":
            fp["quantization"] = "pt2e-litert-symmetric-per-channel-fp32-classifier"
        return fp
