"""A job's stages: a failure names the stage it broke in, and each stage that did its work counts itself.

The counts of one job (:class:`StageCounts`) are logged with each of its runs as ``stages/stages.json``; summed over
a model's jobs (one per queue's task, :func:`summed_stages`) every count is 1: nothing ran twice for the model.
Light (no third-party import): the pipeline imports it before deciding whether anything is to be measured.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any


class StageError(RuntimeError):
    """``stage`` failed with ``cause``; recorded as a FAILED run naming the stage."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage, self.cause = stage, exc


def run_stage(stage: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, any exception from it raised again as a :class:`StageError` of ``stage``."""
    try:
        return fn()
    except Exception as exc:
        raise StageError(stage, exc) from exc


class StageCounts:
    """How many times each stage of one job did its work (``export``, ``reference``, ``latency_cpu``, ...)."""

    def __init__(self) -> None:
        self.job = uuid.uuid4().hex[:12]  # which job counted: a model's counts are summed over its jobs
        self.counts: Counter[str] = Counter()

    def ran(self, stage: str) -> None:
        self.counts[stage] += 1

    def to_json(self, variant: str, key: str, reused: bool) -> dict[str, Any]:
        return {
            "variant": variant,
            "job": self.job,
            "prepared_key": key,
            "prepared": "reused" if reused else "prepared here",
            "stages": dict(sorted(self.counts.items())),
        }


def summed_stages(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per variant, each stage's count summed over the distinct jobs among ``records`` (``stages.json`` contents)."""
    seen: dict[str, dict[str, Any]] = {r["job"]: r for r in records}
    out: dict[str, Counter[str]] = {}
    for r in seen.values():
        out.setdefault(r["variant"], Counter()).update(r["stages"])
    return {v: dict(sorted(c.items())) for v, c in sorted(out.items())}
