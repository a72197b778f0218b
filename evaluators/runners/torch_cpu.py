"""``torch-cpu``: eager PyTorch, FP32, on the CPU: the baseline people would otherwise use.

A torch runner deploys the model itself, not the ONNX graph: the pipeline saves a *torch artifact* beside the ONNX
export (``torch_model.json`` naming the timm architecture and class count, plus ``weights.safetensors``), ``prepare``
finds it from the ONNX path and ``load`` rebuilds the timm model from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.runners.base import Availability, CalibrationData, cpu_info, software_versions

TORCH_MANIFEST = "torch_model.json"
TORCH_WEIGHTS = "weights.safetensors"


class TorchArtifactError(FileNotFoundError):
    """No usable torch artifact beside the ONNX export; the message says which file is missing."""


def save_torch_artifact(model: Any, timm_name: str, num_classes: int, out_dir: Path) -> Path:
    """Write ``weights.safetensors`` and ``torch_model.json`` into ``out_dir``; returns the JSON's path."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / TORCH_WEIGHTS
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    spec = {
        "timm_name": timm_name,
        "num_classes": int(num_classes),
        "weights": TORCH_WEIGHTS,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    path = out_dir / TORCH_MANIFEST
    path.write_text(json.dumps(spec, indent=1, sort_keys=True))
    return path


def torch_artifact_files(manifest: Path) -> list[Path]:
    """The files a torch artifact is made of (for its size on disk and for logging)."""
    return [manifest, manifest.parent / json.loads(manifest.read_text())["weights"]]


def find_torch_artifact(fp32_onnx: Path) -> Path:
    path = fp32_onnx.parent / TORCH_MANIFEST
    if not path.is_file():
        raise TorchArtifactError(
            f"no torch artifact beside {fp32_onnx}: expected {TORCH_MANIFEST} and {TORCH_WEIGHTS} "
            "(evaluators.runners.torch_cpu.save_torch_artifact writes them)"
        )
    return path


def load_torch_model(manifest: Path) -> Any:
    """Rebuild the timm model of a torch artifact, weights checked against the recorded sha256."""
    import timm
    from safetensors.torch import load_file

    spec = json.loads(manifest.read_text())
    weights = manifest.parent / spec["weights"]
    if not weights.is_file():
        raise TorchArtifactError(f"{manifest} names {weights.name}, which is missing")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != spec["weights_sha256"]:
        raise TorchArtifactError(f"{weights} does not match the sha256 recorded in {manifest}")
    model = timm.create_model(spec["timm_name"], pretrained=False, num_classes=spec["num_classes"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


@dataclass
class TorchCpuRunner:
    threads: int = 0  # 0: torch's default (all physical cores)
    name: str = "torch-cpu"
    precision: str = "fp32"

    def availability(self) -> Availability:
        return Availability(True)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        return find_torch_artifact(fp32_onnx)

    def load(self, artifact: Path) -> Any:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        return load_torch_model(artifact)

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.asarray(session(torch.from_numpy(x)).numpy())

    def synchronize(self) -> None:  # eager CPU ops are synchronous
        return None

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        import torch

        return {
            **cpu_info(),
            **software_versions(),
            "runner": self.name,
            "provider": "torch-eager-cpu",
            "precision": self.precision,
            "threads": str(self.threads or f"all ({torch.get_num_threads()})"),
            "batch_size": str(batch_size),
            "image_size": str(image_size),
        }
