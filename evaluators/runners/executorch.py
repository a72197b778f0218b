"""``executorch-xnnpack-fp32`` / ``executorch-xnnpack-int8``: ExecuTorch with the XNNPACK delegate (mobile CPUs).

ExecuTorch deploys the torch model, not the ONNX graph: ``prepare`` rebuilds the timm model from the torch artifact
saved beside the export (as ``torch-cpu`` does), exports it with ``torch.export`` (batch dimension dynamic up to
``max_batch``), lowers it with ``to_edge_transform_and_lower`` and the ``XnnpackPartitioner`` and writes a ``.pte``.
INT8 is pt2e static quantization with ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel weights), calibrated
on the streamed calibration split; ``nn.Linear`` (the classifier) is left in float so logits are not a handful of
levels.

XNNPACK's thread pool is process-wide: ``load`` resets it to ``threads`` (0: leave ExecuTorch's default, one thread
per core) before the program is loaded, and only when the count differs: a program holds the pool it was loaded
with, so sessions of two ExecuTorch runners with different thread counts must not be used side by side in a process
(the bench loads them thread count by thread count).

XNNPACK targets ARM phones; numbers measured here are x86 numbers of the same kernels, so the fingerprint says
``measured_on: host``.
"""

from __future__ import annotations

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
from evaluators.runners.torch_cpu import find_torch_artifact, load_torch_model

PRECISIONS = ("fp32", "int8")
PTE_NAME = "model.pte"


def onnx_input_shape(fp32_onnx: Path) -> tuple[int, int, int]:
    """(channels, height, width) of the ONNX export's input, read without its external data."""
    import onnx

    dims = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    c, h, w = (int(d.dim_value) for d in dims[1:])
    if not (c and h and w):
        raise ValueError(f"{fp32_onnx}: input shape {[d.dim_value or d.dim_param for d in dims]} is not fixed CHW")
    return c, h, w


@dataclass
class ExecuTorchXnnpackRunner:
    precision: str = "fp32"
    threads: int = 0  # XNNPACK thread pool size; 0: ExecuTorch's default
    name: str = ""
    max_batch: int = 8  # the exported program's dynamic batch bound (memory is planned for it); larger ones: chunks
    calibration_batch: int = 8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"executorch runner precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.max_batch < 2:
            raise ValueError(f"executorch runner max_batch {self.max_batch}; valid: 2 or more (the batch is dynamic)")
        self.name = self.name or f"executorch-xnnpack-{self.precision}"

    def availability(self) -> Availability:
        try:
            from executorch.runtime import Runtime
        except ImportError as exc:
            return Availability(False, f"executorch is not installed ({exc}): install cnnselect's dependencies")
        backends = Runtime.get().backend_registry.registered_backend_names
        if "XnnpackBackend" not in backends:
            return Availability(False, f"this executorch build has no XnnpackBackend (backends: {backends})")
        return Availability(True)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        require_available(self)
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        if self.precision == "int8":
            require_calibration(self, calibration)
        model = load_torch_model(find_torch_artifact(fp32_onnx))
        example = (torch.zeros(2, *onnx_input_shape(fp32_onnx)),)  # batch 2: a batch of 1 would be specialised
        dynamic = ({0: torch.export.Dim("batch", min=1, max=self.max_batch)},)
        if self.precision == "int8" and calibration is not None:
            model = self._quantize(model, example, dynamic, calibration)
        program = torch.export.export(model, example, dynamic_shapes=dynamic)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        work_dir.mkdir(parents=True, exist_ok=True)
        out = work_dir / PTE_NAME
        out.write_bytes(lowered.buffer)
        return out

    def _quantize(self, model: Any, example: tuple[Any, ...], dynamic: Any, calibration: CalibrationData) -> Any:
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        quantizer.set_module_type(torch.nn.Linear, None)  # the classifier stays float
        graph = torch.export.export(model, example, dynamic_shapes=dynamic).module()
        observed = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in calibration.batches(min(self.calibration_batch, self.max_batch)):
                observed(torch.from_numpy(batch))
        return convert_pt2e(observed)

    def load(self, artifact: Path) -> Any:
        require_available(self)
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if artifact.suffix != ".pte":
            raise FileNotFoundError(f"{artifact} is not an ExecuTorch program (.pte)")
        if self.threads and portable_lib._threadpool_get_thread_count() != self.threads:
            # process-wide, and "unsafe": XNNPACK programs loaded before the reset keep the old pool, so load after it
            portable_lib._unsafe_reset_threadpool(self.threads)
        method = Runtime.get().load_program(artifact).load_method("forward")
        if method is None:
            raise RuntimeError(f"{artifact} has no 'forward' method")
        return method

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        import torch

        planned = int(session.metadata.input_tensor_meta(0).sizes()[0]) or 1
        outs = []
        for i in range(0, len(x), planned):
            chunk = torch.from_numpy(np.ascontiguousarray(x[i : i + planned]))
            outs.append(np.array(session.execute([chunk])[0].numpy(), dtype=np.float32))  # copy: planned memory
        return np.concatenate(outs)

    def synchronize(self) -> None:  # execute() returns when the method has run
        return None

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        def installed(dist: str) -> str:
            try:
                return version(dist)
            except PackageNotFoundError:
                return "absent"

        threads = str(self.threads or "default")
        try:
            from executorch.extension.pybindings import portable_lib

            threads += f" (pool: {portable_lib._threadpool_get_thread_count()})"
        except ImportError:
            pass
        fp = {
            **cpu_info(),
            **software_versions(),
            "executorch": installed("executorch"),
            "torchao": installed("torchao"),
            "runner": self.name,
            "provider": "executorch-XnnpackBackend",
            "precision": self.precision,
            "threads": threads,
            "batch_size": str(batch_size),
            "image_size": str(image_size),
            "measured_on": "host",  # XNNPACK's x86 kernels on this machine, not a phone
        }
        if self.precision == "int8":
            fp["quantization"] = "pt2e-xnnpack-symmetric-per-channel-fp32-classifier"
        return fp
