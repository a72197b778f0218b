"""The ``Runner`` protocol and the hardware/software fingerprint every measurement carries."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

INPUT_NAME = "input"  # the ONNX graph's input and output names (written by evaluators.export)
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


class RunnerUnavailableError(RuntimeError):
    """The runner's hardware or software is not present here; the message says what is missing."""


@runtime_checkable
class CalibrationData(Protocol):
    """The calibration split, streamed: never held in memory whole (EfficientNet-B7 at 600 px is 4.3 MB an image)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Preprocessed float32 NCHW batches of at most ``batch_size`` images, in a fixed order."""
        ...


@dataclass(frozen=True)
class ArrayCalibration:
    """Calibration images already in memory (tests, small splits), with their labels when known."""

    x: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(0, len(self.x), batch_size):
            yield np.ascontiguousarray(self.x[i : i + batch_size])


@runtime_checkable
class Runner(Protocol):
    """Load a deployable artifact, predict a batch, synchronize, describe the hardware and software."""

    name: str
    precision: str

    def availability(self) -> Availability: ...

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        """Turn the FP32 ONNX export into this runner's deployable artifact (identity for FP32 runners)."""
        ...

    def load(self, artifact: Path) -> Any: ...

    def predict(self, session: Any, x: np.ndarray) -> np.ndarray: ...

    def synchronize(self) -> None: ...

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]: ...


def require_available(runner: Runner) -> None:
    """Raise :class:`RunnerUnavailableError` with the reason when the runner cannot run here."""
    avail = runner.availability()
    if not avail.available:
        raise RunnerUnavailableError(f"runner {runner.name!r} unavailable here: {avail.reason}")


def require_calibration(runner: Runner, calibration: CalibrationData | None) -> CalibrationData:
    """The calibration split, or a ``ValueError`` naming the runner that needs one."""
    if calibration is None or len(calibration) == 0:
        raise ValueError(f"the {runner.name} runner needs calibration images (the dataset's 'calibration' split)")
    return calibration


def cpu_info() -> dict[str, str]:
    """CPU model and the ISA flags that decide INT8/FP32 kernel choice."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "", "x86_64"):
                model = value.strip()
            if key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8") if f in flags]
    return {"cpu_model": model, "cpu_isa": ",".join(isa) or "none", "cpu_cores": str(os.cpu_count() or 0)}


def software_versions() -> dict[str, str]:
    """Installed versions, read without importing them (a fingerprint costs no torch start-up).

    torch's own ``version.py`` is read for its build label (``2.14.1+cu130`` vs ``+cpu``), which the package metadata
    leaves out; onnxruntime may be installed as ``onnxruntime-gpu``.
    """
    import re
    from importlib.metadata import PackageNotFoundError, distribution

    def installed(*dists: str) -> str:
        for name in dists:
            try:
                dist = distribution(name)
            except PackageNotFoundError:
                continue
            if name == "torch":
                try:
                    text = Path(str(dist.locate_file("torch/version.py"))).read_text()
                    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
                    if found:
                        return found.group(1)
                except OSError:
                    pass
            return dist.version
        return "absent"

    return {
        "onnxruntime": installed("onnxruntime", "onnxruntime-gpu"),
        "torch": installed("torch"),
        "timm": installed("timm"),
    }


def fingerprint_id(fp: dict[str, str]) -> str:
    """A short stable id: measurements are comparable only within one id."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


# The fingerprint's hardware fields, per host kind: what two runners' measurements share when they ran on one machine
# (their fingerprints differ in software versions and runner settings). The core count is hardware too: a runner at
# its default threads uses every core.
CPU_HOST, GPU_HOST = "cpu-host", "gpu-host"  # the host kinds a runner measures on
HOST_FIELDS: dict[str, tuple[str, ...]] = {
    CPU_HOST: ("cpu_model", "cpu_isa", "cpu_cores"),
    GPU_HOST: ("gpu_name", "gpu_capability"),
}


def host_id(host: str, fp: dict[str, str]) -> str:
    """The hardware-only id of a machine of kind ``host`` (``cpu-host``, ``gpu-host``): ``cpu-<12 hex>``.

    Only the fields of ``HOST_FIELDS[host]`` count, so measurements of different runners (other runtimes, other
    versions) on the same machine share it. The fingerprint (``fingerprint.json`` on each run) says what it stands for.
    """
    if host not in HOST_FIELDS:
        raise ValueError(f"unknown host {host!r}; known hosts: {', '.join(HOST_FIELDS)}")
    hardware = {f: fp.get(f, "") for f in HOST_FIELDS[host]}
    digest = hashlib.sha256(json.dumps(hardware, sort_keys=True).encode()).hexdigest()[:12]
    return f"{host.removesuffix('-host')}-{digest}"


@runtime_checkable
class PeakMemory(Protocol):
    """Optional: a runner on a device with its own allocator (CUDA) reports its peak allocation."""

    def reset_peak_memory(self) -> None: ...

    def peak_memory_mb(self) -> float: ...


@runtime_checkable
class Int8Recipes(Protocol):
    """An INT8 runner with quantization recipes that trade speed for accuracy, in the order they are tried.

    ``recipes[0]`` is the plain post-training quantization ``prepare`` runs; ``with_recipe`` is a copy of the runner
    that prepares another (``max_drop``: the top-1 an accuracy-controlled recipe may lose, a fraction).
    """

    recipes: tuple[str, ...]
    recipe: str

    def with_recipe(self, recipe: str, max_drop: float) -> Runner: ...


def labelled_batches(data: CalibrationData, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images, labels)`` batches of a split that has ``labels`` (``evaluators.images.ImageSplit``)."""
    found = getattr(data, "labels", None)
    labels = np.asarray(found if found is not None else [])
    if len(labels) != len(data):
        raise ValueError("an accuracy-controlled INT8 recipe needs a labelled calibration split")
    start = 0
    for batch in data.batches(batch_size):
        yield batch, labels[start : start + len(batch)]
        start += len(batch)
