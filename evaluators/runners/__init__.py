"""Runners by name: ``cpu`` (onnxruntime FP32) and ``edge`` (onnxruntime INT8, one thread)."""

from __future__ import annotations

from collections.abc import Callable

from catalog._registry import Registry
from evaluators.runners.base import Availability, Runner, RunnerUnavailableError, fingerprint_id

__all__ = ["RUNNER_NAMES", "Availability", "Runner", "RunnerUnavailableError", "fingerprint_id", "get_runner"]


def _cpu() -> Runner:
    from evaluators.runners.cpu import OnnxCpuRunner

    return OnnxCpuRunner()


def _edge() -> Runner:
    from evaluators.runners.edge import OnnxEdgeInt8Runner

    return OnnxEdgeInt8Runner()


_FACTORIES: Registry[Callable[[], Runner]] = Registry("runner")
_FACTORIES.add("cpu", _cpu)
_FACTORIES.add("edge", _edge)
RUNNER_NAMES: tuple[str, ...] = tuple(_FACTORIES.names())


def get_runner(name: str) -> Runner:
    """A fresh runner by name; unknown names list the known ones."""
    return _FACTORIES.get(name)()
