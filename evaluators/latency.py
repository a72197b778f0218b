"""Latency: warm up, then measure until both a minimum count and a minimum duration are reached.

Tail percentiles, their upper confidence bounds (order statistics), CoV and a window-agreement stability flag.
Two measurements never overlap on one machine: each holds an exclusive file lock for its duration.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

PERCENTILES = (50, 90, 95, 99)
# the machine-wide lock when no caller names one; cnnselect passes Settings.latency_lock (CNNSELECT_LATENCY_LOCK)
DEFAULT_LOCK = Path("/tmp/cnnselect-latency.lock")


@dataclass(frozen=True)
class LatencySettings:
    warmup: int = 10
    min_iters: int = 100
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    windows: int = 4
    stable_within: float = 0.10  # last windows' medians agree within 10% (Triton perf_analyzer's rule)
    large_batch: int = 8  # the second measurement's batch size; metrics get the suffix ``_b<large_batch>``; 0: off
    attempts: int = 3  # an unstable measurement is taken again, up to this many times in all; the last is kept

    def __post_init__(self) -> None:
        if self.large_batch < 0 or self.large_batch == 1:
            raise ValueError(f"large_batch {self.large_batch}: use 0 (off) or a batch size of at least 2")
        if self.attempts < 1:
            raise ValueError(f"attempts {self.attempts}: at least 1")

    @property
    def batch_suffix(self) -> str:
        return f"_b{self.large_batch}"


def batch_of(x: np.ndarray, batch_size: int) -> np.ndarray:
    """The first ``batch_size`` images of ``x``, repeated when ``x`` holds fewer; C-contiguous."""
    if len(x) == 0:
        raise ValueError("no images to build a latency batch from")
    reps = -(-batch_size // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size] if reps > 1 else x[:batch_size])


@dataclass(frozen=True)
class LatencyResult:
    batch_size: int
    samples_ms: tuple[float, ...]
    stable: bool
    attempts: int = 1  # measurements taken to get this one (more than 1: earlier ones were unstable)

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.samples_ms, p))

    def upper_bound(self, p: float, confidence: float = 0.95) -> float:
        """Distribution-free upper confidence bound of the p-th percentile (order statistic)."""
        s = np.sort(self.samples_ms)
        k = int(binom.ppf(confidence, len(s), p / 100.0))  # P(#samples below the true quantile <= k) >= confidence
        return float(s[min(k, len(s) - 1)])

    def to_metrics(self, suffix: str = "") -> dict[str, float]:
        a = np.asarray(self.samples_ms)
        m: dict[str, float] = {}
        for p in PERCENTILES:
            m[f"latency_p{p}_ms{suffix}"] = self.percentile(p)
            m[f"latency_p{p}_ub_ms{suffix}"] = self.upper_bound(p)
        mean = float(a.mean())
        m[f"latency_mean_ms{suffix}"] = mean
        m[f"latency_std_ms{suffix}"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        m[f"latency_cov{suffix}"] = m[f"latency_std_ms{suffix}"] / mean if mean > 0 else float("nan")
        m[f"throughput_ips{suffix}"] = 1000.0 * self.batch_size / mean if mean > 0 else float("nan")
        m[f"latency_stable{suffix}"] = float(self.stable)
        m[f"latency_samples{suffix}"] = float(len(a))
        m[f"latency_attempts{suffix}"] = float(self.attempts)
        return m


@contextlib.contextmanager
def exclusive(lock_path: Path | None = None) -> Iterator[None]:
    """Hold the machine-wide latency lock (blocking) so that two measurements never run at once."""
    path = lock_path or DEFAULT_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stable(samples: list[float], windows: int, within: float) -> bool:
    if len(samples) < 2 * windows:
        return False
    meds = [float(np.median(w)) for w in np.array_split(np.asarray(samples), windows)][-3:]
    return max(meds) <= (1.0 + within) * min(meds)


def measure(
    run: Callable[[], object],
    sync: Callable[[], None],
    batch_size: int,
    settings: LatencySettings = LatencySettings(),
    lock_path: Path | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyResult:
    """Time ``run`` (one inference of ``batch_size``), ``sync`` after each call (CUDA-style runners).

    When the windows disagree, the measurement is taken again (up to ``settings.attempts`` in all) and the first
    stable one is returned; if none is, the last is returned flagged ``stable=False`` with ``attempts`` set.
    ``clock`` (seconds) is there for tests that drive the stopping rules with a deterministic workload.
    """
    with exclusive(lock_path):
        for attempt in range(1, settings.attempts + 1):
            result = _measure_once(run, sync, batch_size, settings, attempt, clock)
            if result.stable:
                break
    return result


def _measure_once(
    run: Callable[[], object],
    sync: Callable[[], None],
    batch_size: int,
    settings: LatencySettings,
    attempt: int,
    clock: Callable[[], float],
) -> LatencyResult:
    for _ in range(settings.warmup):
        run()
    sync()
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        sync()
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        elapsed = t1 - start
        if len(samples) >= settings.min_iters and elapsed >= settings.min_seconds:
            if _stable(samples, settings.windows, settings.stable_within) or elapsed >= settings.max_seconds:
                break
            if len(samples) >= 4 * settings.min_iters and elapsed >= 4 * settings.min_seconds:
                break
    stable = _stable(samples, settings.windows, settings.stable_within)
    return LatencyResult(batch_size, tuple(samples), stable, attempt)


def measure_batches(
    predict: Callable[[np.ndarray], object],
    sync: Callable[[], None],
    x: np.ndarray,
    settings: LatencySettings = LatencySettings(),
    lock_path: Path | None = None,
) -> dict[str, float]:
    """Latency at batch 1 (no suffix), then at ``settings.large_batch`` (metrics suffixed ``_b<n>``)."""
    x1 = batch_of(x, 1)
    metrics = measure(lambda: predict(x1), sync, 1, settings, lock_path).to_metrics()
    if settings.large_batch:
        xb = batch_of(x, settings.large_batch)
        big = measure(lambda: predict(xb), sync, settings.large_batch, settings, lock_path)
        metrics.update(big.to_metrics(settings.batch_suffix))
    return metrics
