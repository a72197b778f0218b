"""Peak resident memory per stage of an evaluation (``peak_rss_mb_<stage>`` metrics).

On Linux the kernel keeps the process's high-water mark (``VmHWM``) and lets a process reset it (writing ``5`` to
``/proc/self/clear_refs``), so each stage's peak is exact and costs two small file operations. Before each stage the
C heap's free memory is returned to the kernel (``malloc_trim``): an export or a reference pass frees gigabytes of
activations that glibc would otherwise keep mapped, and count in every later stage's peak. Elsewhere the peak is
the process's lifetime maximum (``ru_maxrss``), an upper bound.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _hwm_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def trim() -> None:
    """Hand the C heap's free memory back to the kernel (glibc keeps freed blocks of big tensors mapped otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset() -> None:
    trim()
    with contextlib.suppress(OSError):
        _CLEAR.write_text("5")


class StagePeaks:
    """``with peaks.stage("export"): ...`` records the peak RSS (MiB) reached inside the block."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _reset()
        try:
            yield
        finally:
            self.peaks[name] = max(self.peaks.get(name, 0.0), _hwm_mb())

    def to_metrics(self) -> dict[str, float]:
        out = {f"peak_rss_mb_{k}": v for k, v in self.peaks.items()}
        if self.peaks:
            out["peak_rss_mb"] = max(self.peaks.values())
        return out


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive on entry left out of the cyclic garbage collector's passes until exit (``gc.freeze``).

    A job starts in a process that holds over a million objects it did not make (torch, timm, ONNX, MLflow, GX,
    Airflow) and will not free; each full collection walks all of them again (about 0.9 s each in the demo sweep's
    process, several a model: the exporter makes many objects). Airflow's executors freeze the heap so before they
    fork their workers; a job in a process where nothing froze it (``dag.test()``, the CLI) freezes it itself, and
    gives it back to the collector when it ends. Where something froze it already (a Celery pool process) it is left
    as it is: ``gc.unfreeze`` would give back that freezer's objects too.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
