"""GPU runners: torch CUDA (fp16/bf16 autocast, channels_last) and onnxruntime's CUDA and TensorRT providers.

Each detects its hardware at run time; where CUDA (or the provider) is missing, ``availability()`` says so with the
reason and ``load`` raises ``RunnerUnavailableError``: nothing falls back silently to the CPU.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import (
    Availability,
    CalibrationData,
    RunnerUnavailableError,
    cpu_info,
    require_available,
    software_versions,
)
from evaluators.runners.cpu import OnnxCpuRunner
from evaluators.runners.torch_cpu import find_torch_artifact, load_torch_model

AUTOCAST_DTYPES = ("fp16", "bf16")


def cuda_availability() -> Availability:
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        return Availability(
            False, f"torch {torch.__version__} (CUDA {built}) sees no CUDA device: torch.cuda.is_available() is False"
        )
    return Availability(True)


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def gpu_info(device: int = 0) -> dict[str, str]:
    """GPU name, compute capability, memory, driver and CUDA versions; empty values where no GPU is present."""
    import torch

    info = {"cuda": str(torch.version.cuda or "none"), "cudnn": str(torch.backends.cudnn.version() or "none")}
    if not torch.cuda.is_available():
        return {**info, "gpu_name": "none", "gpu_driver": "none"}
    props = torch.cuda.get_device_properties(device)
    return {
        **info,
        "gpu_name": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gb": f"{props.total_memory / 1e9:.1f}",
        "gpu_driver": _driver_version(),
    }


@dataclass
class TorchGpuRunner:
    """Eager torch on CUDA under autocast (``fp16`` or ``bf16``), channels_last memory format."""

    precision: str = "fp16"
    channels_last: bool = True
    device: int = 0
    name: str = "gpu"

    def __post_init__(self) -> None:
        if self.precision not in AUTOCAST_DTYPES:
            raise ValueError(f"gpu runner precision {self.precision!r}; valid: {', '.join(AUTOCAST_DTYPES)}")

    def availability(self) -> Availability:
        avail = cuda_availability()
        if avail.available and self.precision == "bf16":
            import torch

            if not torch.cuda.is_bf16_supported():
                return Availability(False, f"{torch.cuda.get_device_name(self.device)} does not support bf16")
        return avail

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        return find_torch_artifact(fp32_onnx)

    def load(self, artifact: Path) -> Any:
        import torch

        require_available(self)
        model = load_torch_model(artifact).to(f"cuda:{self.device}")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        import torch

        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
            xt = torch.from_numpy(x).to(f"cuda:{self.device}", non_blocking=True).contiguous(memory_format=fmt)
            return np.asarray(session(xt).float().cpu().numpy())

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float:
        import torch

        return float(torch.cuda.max_memory_allocated(self.device)) / 1e6

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        return {
            **cpu_info(),
            **software_versions(),
            **gpu_info(self.device),
            "runner": self.name,
            "provider": "torch-cuda-eager",
            "precision": self.precision,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "batch_size": str(batch_size),
            "image_size": str(image_size),
        }


@dataclass
class OnnxGpuRunner(OnnxCpuRunner):
    """onnxruntime with the CUDA (FP32) or TensorRT (FP16 engine) execution provider; no CPU fallback."""

    provider: str = "CUDAExecutionProvider"
    name: str = "gpu-ort"
    precision: str = "fp32"
    device: int = 0

    def availability(self) -> Availability:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if self.provider not in have:
            return Availability(
                False,
                f"onnxruntime {ort.__version__} has no {self.provider} (has {', '.join(have)}); "
                "install onnxruntime-gpu on a CUDA machine",
            )
        return cuda_availability()

    def _providers(self) -> list[Any]:
        if self.provider == "TensorrtExecutionProvider":
            opts = {"device_id": self.device, "trt_fp16_enable": self.precision == "fp16"}
            return [(self.provider, opts)]
        return [(self.provider, {"device_id": self.device})]

    def load(self, artifact: Path) -> Any:
        import onnxruntime as ort

        avail = self.availability()
        if not avail.available:
            raise RunnerUnavailableError(f"runner {self.name!r}: {avail.reason}")
        from evaluators.onnx_safety import check_onnx_file

        check_onnx_file(artifact)  # external data must stay inside the model's folder
        session = ort.InferenceSession(str(artifact), self.session_options(), providers=self._providers())
        got = session.get_providers()
        if got[0] != self.provider:  # onnxruntime falls back to the CPU when a provider fails
            raise RunnerUnavailableError(f"runner {self.name!r}: {self.provider} did not load (got {', '.join(got)})")
        return session

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        fp = super().fingerprint(batch_size, image_size)
        fp.update(gpu_info(self.device))
        fp["provider"] = self.provider
        fp.pop("threads", None)
        return fp
