"""Runners by name.

``cpu`` (onnxruntime FP32, all cores), ``edge`` (onnxruntime INT8 static QDQ, one thread), ``torch-cpu`` (eager torch
FP32: the baseline), ``gpu`` / ``gpu-bf16`` (torch CUDA autocast fp16 / bf16, channels_last), ``gpu-ort``
(onnxruntime CUDA provider, FP32) and ``gpu-trt`` (onnxruntime TensorRT provider, FP16). A runner whose hardware is
missing reports itself unavailable with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from catalog._registry import Registry
from evaluators.runners.base import Availability, PeakMemory, Runner, RunnerUnavailableError, fingerprint_id

__all__ = [
    "RUNNER_NAMES",
    "TORCH_RUNNERS",
    "Availability",
    "PeakMemory",
    "Runner",
    "artifact_files",
    "RunnerUnavailableError",
    "fingerprint_id",
    "get_runner",
]


def _cpu() -> Runner:
    from evaluators.runners.cpu import OnnxCpuRunner

    return OnnxCpuRunner()


def _edge() -> Runner:
    from evaluators.runners.edge import OnnxEdgeInt8Runner

    return OnnxEdgeInt8Runner()


def _torch_cpu() -> Runner:
    from evaluators.runners.torch_cpu import TorchCpuRunner

    return TorchCpuRunner()


def _gpu() -> Runner:
    from evaluators.runners.gpu import TorchGpuRunner

    return TorchGpuRunner(precision="fp16")


def _gpu_bf16() -> Runner:
    from evaluators.runners.gpu import TorchGpuRunner

    return TorchGpuRunner(precision="bf16", name="gpu-bf16")


def _gpu_ort() -> Runner:
    from evaluators.runners.gpu import OnnxGpuRunner

    return OnnxGpuRunner()


def _gpu_trt() -> Runner:
    from evaluators.runners.gpu import OnnxGpuRunner

    return OnnxGpuRunner(provider="TensorrtExecutionProvider", name="gpu-trt", precision="fp16")


_FACTORIES: Registry[Callable[[], Runner]] = Registry("runner")
_FACTORIES.add("cpu", _cpu)
_FACTORIES.add("edge", _edge)
_FACTORIES.add("torch-cpu", _torch_cpu)
_FACTORIES.add("gpu", _gpu)
_FACTORIES.add("gpu-bf16", _gpu_bf16)
_FACTORIES.add("gpu-ort", _gpu_ort)
_FACTORIES.add("gpu-trt", _gpu_trt)
RUNNER_NAMES: tuple[str, ...] = tuple(_FACTORIES.names())


TORCH_RUNNERS: tuple[str, ...] = ("torch-cpu", "gpu", "gpu-bf16")  # runners that deploy the torch artifact


def artifact_files(artifact: Path) -> list[Path]:
    """The files of a deployable artifact: a torch artifact's manifest and weights, or an ONNX graph and its data."""
    from evaluators.runners.torch_cpu import TORCH_MANIFEST, torch_artifact_files

    if artifact.name == TORCH_MANIFEST:
        return torch_artifact_files(artifact)
    return sorted(p for p in artifact.parent.iterdir() if p.is_file() and p.name.startswith(artifact.name))


def get_runner(name: str) -> Runner:
    """A fresh runner by name; unknown names list the known ones."""
    return _FACTORIES.get(name)()
