"""``openvino-fp32`` / ``openvino-bf16`` / ``openvino-int8``: OpenVINO on the CPU, the runtime Intel servers deploy.

The deployable artifact is OpenVINO IR (``model.xml`` + ``model.bin``) saved with ``compress_to_fp16=False``, so the
weights on disk are the precision that runs. ``INFERENCE_PRECISION_HINT`` is always set: on a CPU with AMX or
AVX512-BF16 OpenVINO's default is bf16, so an "fp32" runner that left it unset would silently run bf16. The
fingerprint reads back what the compiled model actually runs at (``execution_precision`` and the set of per-layer
``runtime_precisions``), not what was asked for.

INT8 is NNCF post-training quantization (``nncf.quantize``) of the IR converted from the ONNX export, calibrated on the
streamed calibration split; the classifier (the last MatMul, ONNX ``Gemm``) is kept out of quantization so logits stay
float instead of a handful of levels. The layers NNCF leaves in float run at ``float_hint`` (f32 by default).

The IR comes from ``ov.convert_model``, not ``Core.read_model``: convert_model fuses the exported SiLU (Sigmoid *
Mul) into ``Swish``; on read_model's unfused graph NNCF quantizes both inputs of each Mul, and the CPU plugin's INT8
EfficientNet then outputs all-zero logits (OpenVINO 2026.4, NNCF 3.4; ``test_runtimes`` holds the case).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import (
    Availability,
    CalibrationData,
    cpu_info,
    labelled_batches,
    require_available,
    require_calibration,
    software_versions,
)

PRECISIONS = ("fp32", "bf16", "int8")
RECIPES = ("ptq", "accuracy-control")  # int8: NNCF's plain post-training quantization, then with accuracy control
HINTS = {"fp32": "f32", "bf16": "bf16"}  # OpenVINO's element type names for INFERENCE_PRECISION_HINT
IR_NAME = "model.xml"


def _installed(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


class _NncfBatches:
    """The calibration stream as NNCF's data source: re-iterable, with a length and a batch size, one batch held."""

    def __init__(self, data: CalibrationData, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.data.batches(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)


def classifier_ops(model: Any) -> list[str]:
    """Friendly names of the last MatMul (the classifier; ONNX ``Gemm`` becomes MatMul + Add in OpenVINO)."""
    for op in reversed(model.get_ordered_ops()):
        if op.get_type_name() == "MatMul":
            return [op.get_friendly_name()]
    return []


class _Labelled:
    """``(images, labels)`` batches of the calibration split, re-iterable, for NNCF's validation function."""

    def __init__(self, data: CalibrationData, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return labelled_batches(self.data, self.batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)


def _top1(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Top-1 of a compiled model over ``(images, labels)`` batches (ties: the lower class, as everywhere)."""
    right = total = 0
    for x, y in items:
        logits = np.asarray(compiled(x)[0])
        right += int((np.argmax(logits, axis=1) == y).sum())  # argmax takes the first maximum: the lower index
        total += len(y)
    return right / max(1, total)


@dataclass
class _Session:
    compiled: Any
    request: Any


@dataclass
class OpenVinoRunner:
    precision: str = "fp32"
    threads: int = 0  # INFERENCE_NUM_THREADS; 0: OpenVINO's default (all cores)
    name: str = ""
    float_hint: str = "f32"  # int8 only: precision of the layers NNCF leaves in float
    calibration_batch: int = 8
    calibration_images: int = 300  # NNCF's default subset size, in images
    recipe: str = "ptq"  # int8: one of RECIPES
    max_drop: float = 0.01  # accuracy-control: top-1 the INT8 model may lose against FP32 on the calibration split
    recipes: tuple[str, ...] = field(default=RECIPES, init=False, repr=False)
    _last: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"openvino runner precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.recipe not in RECIPES:
            raise ValueError(f"openvino int8 recipe {self.recipe!r}; valid: {', '.join(RECIPES)}")
        self.name = self.name or f"openvino-{self.precision}"

    def with_recipe(self, recipe: str, max_drop: float) -> OpenVinoRunner:
        return replace(self, recipe=recipe, max_drop=max_drop)

    @property
    def hint(self) -> str:
        return HINTS.get(self.precision, self.float_hint)

    def availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(False, f"openvino is not installed ({exc}): install cnnselect's dependencies")
        if self.precision == "int8":
            try:
                import nncf  # noqa: F401
            except ImportError as exc:
                return Availability(False, f"nncf is not installed ({exc}): it quantizes openvino-int8")
        core = ov.Core()
        if "CPU" not in core.available_devices:
            return Availability(False, f"OpenVINO sees no CPU device (devices: {core.available_devices})")
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if self.precision == "bf16" and "BF16" not in caps:
            return Availability(False, f"this CPU has no bf16 support (OpenVINO capabilities: {', '.join(caps)})")
        if self.precision == "int8" and "INT8" not in caps:
            return Availability(False, f"this CPU has no int8 support (OpenVINO capabilities: {', '.join(caps)})")
        return Availability(True)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        require_available(self)
        import openvino as ov

        from evaluators.onnx_safety import check_onnx_file

        if self.precision == "int8":
            require_calibration(self, calibration)
        check_onnx_file(fp32_onnx)  # external data leaving the model's folder is refused before OpenVINO reads it
        model = ov.convert_model(str(fp32_onnx))  # not Core.read_model: see the module docstring
        if self.precision == "int8" and calibration is not None:
            model = self._quantize(model, calibration)
        work_dir.mkdir(parents=True, exist_ok=True)
        out = work_dir / IR_NAME
        ov.save_model(model, str(out), compress_to_fp16=False)
        return out

    def _quantize(self, model: Any, calibration: CalibrationData) -> Any:
        import nncf

        data = _NncfBatches(calibration, self.calibration_batch)
        keep_float = classifier_ops(model)
        common: dict[str, Any] = {
            "target_device": nncf.TargetDevice.CPU,
            "subset_size": max(1, min(len(data), math.ceil(self.calibration_images / self.calibration_batch))),
            "ignored_scope": nncf.IgnoredScope(names=keep_float) if keep_float else None,
        }
        if self.recipe == "ptq":
            return nncf.quantize(model, nncf.Dataset(data), **common)
        # NNCF's accuracy-aware quantization: layers go back to float, most harmful first, until the INT8 model's
        # top-1 on the labelled calibration split is within max_drop of the float model's (the held-out split is
        # never seen: it measures the result)
        validation = nncf.Dataset(_Labelled(calibration, self.calibration_batch), lambda item: item[0])
        return nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(data), validation, _top1, max_drop=self.max_drop,
            drop_type=nncf.DropType.ABSOLUTE, **common,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        return {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self.hint,
            "INFERENCE_NUM_THREADS": self.threads,
        }

    def load(self, artifact: Path) -> Any:
        require_available(self)
        import openvino as ov

        if artifact.suffix != ".xml" or not artifact.with_suffix(".bin").is_file():
            raise FileNotFoundError(f"{artifact} is not OpenVINO IR (model.xml with model.bin beside it)")
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(artifact)), "CPU", self.config())
        self._last = compiled
        return _Session(compiled, compiled.create_infer_request())

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        session.request.infer({0: x})
        return np.array(session.request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused

    def synchronize(self) -> None:  # infer() returns when the request is done
        return None

    def _probe(self) -> Any:
        """A one-op model compiled with this runner's settings: what the device resolves them to, before any load."""
        import openvino as ov
        import openvino.opset13 as ops

        x = ops.parameter([1, 8], np.float32)
        probe = ov.Model([ops.relu(ops.matmul(x, ops.constant(np.eye(8, dtype=np.float32)), False, False))], [x])
        return ov.Core().compile_model(probe, "CPU", self.config())

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        fp = {
            **cpu_info(),
            **software_versions(),
            "openvino": _installed("openvino"),
            "nncf": _installed("nncf"),
            "runner": self.name,
            "provider": "openvino-CPU",
            "precision": self.precision,
            "precision_hint": self.hint,
            "performance_hint": "LATENCY",
            "threads": str(self.threads or "all"),
            "batch_size": str(batch_size),
            "image_size": str(image_size),
        }
        if self.precision == "int8":
            fp["quantization"] = "nncf-ptq-s8-weights-fp32-classifier"
        if not self.availability().available:
            return {**fp, "execution_precision": "unavailable"}
        compiled = self._last if self._last is not None else self._probe()
        fp["execution_precision"] = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        fp["execution_threads"] = str(compiled.get_property("INFERENCE_NUM_THREADS"))
        if self._last is not None:
            fp["runtime_precisions"] = ",".join(runtime_precisions(self._last))
        return fp


def _type_name(t: Any) -> str:
    return str(t.get_type_name()) if hasattr(t, "get_type_name") else str(t)


def runtime_precisions(compiled: Any) -> list[str]:
    """The element types the compiled model's layers run at (OpenVINO's ``runtimePrecision`` per executed layer)."""
    found = set()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            found.add(str(info["runtimePrecision"].astype(str)))
    return sorted(found)
