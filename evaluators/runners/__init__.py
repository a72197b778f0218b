"""Runners by name.

``cpu`` (onnxruntime FP32, all cores), ``edge`` (onnxruntime INT8 static QDQ, one thread), ``torch-cpu`` (eager torch
FP32: the baseline), ``gpu`` / ``gpu-bf16`` (torch CUDA autocast fp16 / bf16, channels_last), ``gpu-ort``
(onnxruntime CUDA provider, FP32), ``gpu-trt`` (onnxruntime TensorRT provider, FP16), ``openvino-fp32`` /
``openvino-bf16`` / ``openvino-int8`` (OpenVINO CPU, INT8 by NNCF), ``executorch-xnnpack-fp32`` / ``-int8``
(ExecuTorch + XNNPACK, the mobile runtime, measured on this host) and ``litert-fp32`` / ``litert-int8`` (LiteRT, with
the ``cnnselect[litert]`` extra). A runner whose hardware or software is missing reports itself unavailable with the
reason.

Each runner is declared once (``_SPECS``): the host kind it measures on (``cpu-host``: the CPU runners, ``gpu-host``:
the CUDA ones), the precision it deploys and its runtime. A host target (``Constraints(target="cpu-host")``) weighs
every runner of that host, on one machine: measurements carry a hardware-only host id (:func:`host_id`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catalog._nametable import NameTable
from evaluators.runners.base import (
    CPU_HOST,
    GPU_HOST,
    HOST_FIELDS,
    Availability,
    PeakMemory,
    Runner,
    RunnerUnavailableError,
    fingerprint_id,
    host_id,
)

__all__ = [
    "CPU_HOST",
    "GPU_HOST",
    "HOSTS",
    "ONNX_RUNNERS",
    "RUNNER_HOST",
    "RUNNER_NAMES",
    "RUNNER_PRECISION",
    "TORCH_RUNNERS",
    "Availability",
    "PeakMemory",
    "Runner",
    "RunnerSpec",
    "artifact_files",
    "RunnerUnavailableError",
    "find_artifact",
    "fingerprint_id",
    "get_runner",
    "host_id",
    "host_runners",
    "runner_host_id",
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


@dataclass(frozen=True)
class RunnerSpec:
    """What cnnselect knows of a runner without building it: the host kind it measures on, what it deploys."""

    name: str
    host: str  # one of HOSTS: the kind of machine its measurements describe
    precision: str  # what it deploys (its measurements' precision)
    runtime: str  # onnxruntime: the registered ONNX is the artifact; any other: the run's deploy/ folder holds it
    factory: Callable[[], Runner]


HOSTS: tuple[str, ...] = tuple(HOST_FIELDS)
# the one declaration of every runner: its name, host kind, precision and runtime
_SPECS = (
    RunnerSpec("cpu", CPU_HOST, "fp32", "onnxruntime", _cpu),
    RunnerSpec("edge", CPU_HOST, "int8", "onnxruntime", _edge),
    RunnerSpec("torch-cpu", CPU_HOST, "fp32", "torch", _torch_cpu),
    RunnerSpec("gpu", GPU_HOST, "fp16", "torch", _gpu),
    RunnerSpec("gpu-bf16", GPU_HOST, "bf16", "torch", _gpu_bf16),
    RunnerSpec("gpu-ort", GPU_HOST, "fp32", "onnxruntime", _gpu_ort),
    RunnerSpec("gpu-trt", GPU_HOST, "fp16", "onnxruntime", _gpu_trt),
    RunnerSpec("openvino-fp32", CPU_HOST, "fp32", "openvino", _openvino("fp32")),
    RunnerSpec("openvino-bf16", CPU_HOST, "bf16", "openvino", _openvino("bf16")),
    RunnerSpec("openvino-int8", CPU_HOST, "int8", "openvino", _openvino("int8")),
    RunnerSpec("executorch-xnnpack-fp32", CPU_HOST, "fp32", "executorch", _executorch("fp32")),
    RunnerSpec("executorch-xnnpack-int8", CPU_HOST, "int8", "executorch", _executorch("int8")),
    RunnerSpec("litert-fp32", CPU_HOST, "fp32", "litert", _litert("fp32")),
    RunnerSpec("litert-int8", CPU_HOST, "int8", "litert", _litert("int8")),
)
_FACTORIES: NameTable[RunnerSpec] = NameTable("runner", listing="`cnnselect runners` lists them")
for _spec in _SPECS:
    _FACTORIES.add(_spec.name, _spec)
RUNNER_NAMES: tuple[str, ...] = tuple(_FACTORIES.names())
RUNNER_HOST: dict[str, str] = {s.name: s.host for s in _SPECS}
RUNNER_PRECISION: dict[str, str] = {s.name: s.precision for s in _SPECS}
ONNX_RUNNERS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.runtime == "onnxruntime")  # deploy the ONNX
TORCH_RUNNERS: tuple[str, ...] = tuple(  # runners that deploy the torch artifact, not the ONNX graph
    s.name for s in _SPECS if s.runtime in ("torch", "executorch", "litert")
)


def host_runners(host: str) -> tuple[str, ...]:
    """The runners that measure on ``host`` (a name of ``HOSTS``), in declaration order."""
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; known hosts: {', '.join(HOSTS)}")
    return tuple(s.name for s in _SPECS if s.host == host)


def runner_host_id(runner: str, fp: dict[str, str]) -> str:
    """The hardware-only id of the machine a measurement on ``runner`` with fingerprint ``fp`` ran on."""
    return host_id(RUNNER_HOST[runner], fp)


def artifact_files(artifact: Path) -> list[Path]:
    """The files of a deployable artifact: torch manifest + weights, OpenVINO ``.xml`` + ``.bin``, ONNX graph + data."""
    from evaluators.runners.torch_cpu import TORCH_MANIFEST, torch_artifact_files

    if artifact.name == TORCH_MANIFEST:
        return torch_artifact_files(artifact)
    if artifact.suffix == ".xml":
        return [artifact, artifact.with_suffix(".bin")]
    return sorted(p for p in artifact.parent.iterdir() if p.is_file() and p.name.startswith(artifact.name))


def find_artifact(folder: Path) -> Path:
    """The deployable artifact among a run's ``deploy/`` files (what :func:`artifact_files` listed), by its kind.

    OpenVINO IR (``.xml``, its ``.bin`` beside it), an ExecuTorch program (``.pte``), a LiteRT model (``.tflite``),
    or the torch manifest; ``FileNotFoundError`` names what the folder holds.
    """
    from evaluators.runners.torch_cpu import TORCH_MANIFEST

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for wanted in (".xml", ".pte", ".tflite"):
        found = [p for p in files if p.suffix == wanted]
        if found:
            return found[0]
    manifest = [p for p in files if p.name == TORCH_MANIFEST]
    if manifest:
        return manifest[0]
    held = ", ".join(p.name for p in files) or "nothing"
    raise FileNotFoundError(f"{folder} holds no deployable artifact (.xml, .pte, .tflite, {TORCH_MANIFEST}): {held}")


def get_runner(name: str) -> Runner:
    """A fresh runner by name; unknown names list the known ones."""
    return _FACTORIES.get(name).factory()
