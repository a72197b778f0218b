"""Runners by name.

``cpu`` (onnxruntime FP32, all cores), ``edge`` (onnxruntime INT8 static QDQ, one thread), ``torch-cpu`` (eager torch
FP32: the baseline), ``gpu`` / ``gpu-bf16`` (torch CUDA autocast fp16 / bf16, channels_last), ``gpu-ort``
(onnxruntime CUDA provider, FP32), ``gpu-trt`` (onnxruntime TensorRT provider, FP16), ``openvino-fp32`` /
``openvino-bf16`` / ``openvino-int8`` (OpenVINO CPU, INT8 by NNCF), ``executorch-xnnpack-fp32`` / ``-int8``
(ExecuTorch + XNNPACK, the mobile runtime, measured on this host) and ``litert-fp32`` / ``litert-int8`` (LiteRT, with
the ``cnnselect[litert]`` extra). A runner whose hardware or software is missing reports itself unavailable with the
reason.
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


def _openvino(precision: str) -> Callable[[], Runner]:
    def make() -> Runner:
        from evaluators.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(precision=precision)

    return make


def _executorch(precision: str) -> Callable[[], Runner]:
    def make() -> Runner:
        from evaluators.runners.executorch import ExecuTorchXnnpackRunner

        return ExecuTorchXnnpackRunner(precision=precision)

    return make


def _litert(precision: str) -> Callable[[], Runner]:
    def make() -> Runner:
        from evaluators.runners.litert import LiteRtRunner

        return LiteRtRunner(precision=precision)

    return make


_FACTORIES: Registry[Callable[[], Runner]] = Registry("runner", listing="`cnnselect runners` lists them")
_FACTORIES.add("cpu", _cpu)
_FACTORIES.add("edge", _edge)
_FACTORIES.add("torch-cpu", _torch_cpu)
_FACTORIES.add("gpu", _gpu)
_FACTORIES.add("gpu-bf16", _gpu_bf16)
_FACTORIES.add("gpu-ort", _gpu_ort)
_FACTORIES.add("gpu-trt", _gpu_trt)
_FACTORIES.add("openvino-fp32", _openvino("fp32"))
_FACTORIES.add("openvino-bf16", _openvino("bf16"))
_FACTORIES.add("openvino-int8", _openvino("int8"))
_FACTORIES.add("executorch-xnnpack-fp32", _executorch("fp32"))
_FACTORIES.add("executorch-xnnpack-int8", _executorch("int8"))
_FACTORIES.add("litert-fp32", _litert("fp32"))
_FACTORIES.add("litert-int8", _litert("int8"))
RUNNER_NAMES: tuple[str, ...] = tuple(_FACTORIES.names())


TORCH_RUNNERS: tuple[str, ...] = (  # runners that deploy the torch artifact, not the ONNX graph
    "torch-cpu",
    "gpu",
    "gpu-bf16",
    "executorch-xnnpack-fp32",
    "executorch-xnnpack-int8",
    "litert-fp32",
    "litert-int8",
)


def artifact_files(artifact: Path) -> list[Path]:
    """The files of a deployable artifact: torch manifest + weights, OpenVINO ``.xml`` + ``.bin``, ONNX graph + data."""
    from evaluators.runners.torch_cpu import TORCH_MANIFEST, torch_artifact_files

    if artifact.name == TORCH_MANIFEST:
        return torch_artifact_files(artifact)
    if artifact.suffix == ".xml":
        return [artifact, artifact.with_suffix(".bin")]
    return sorted(p for p in artifact.parent.iterdir() if p.is_file() and p.name.startswith(artifact.name))


def get_runner(name: str) -> Runner:
    """A fresh runner by name; unknown names list the known ones."""
    return _FACTORIES.get(name)()
