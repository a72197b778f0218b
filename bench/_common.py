"""Helpers shared by the bench scripts: seeded models, ONNX exports at a given size, latency settings."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from catalog import get_entry
from catalog.weights import create_model, revive_zero_norms
from evaluators.export import export_onnx
from evaluators.latency import LatencySettings


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--quick", action="store_true", help="a fast, reduced run to prove the script works")
    p.add_argument("--no-write", action="store_true", help="print the block instead of writing docs/BENCHMARKS.md")
    return p


def settings(quick: bool, large_batch: int = 0) -> LatencySettings:
    if quick:
        return LatencySettings(warmup=3, min_iters=20, min_seconds=0.2, max_seconds=5.0, large_batch=large_batch)
    return LatencySettings(large_batch=large_batch)


def model(name: str, num_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model(get_entry(name), num_classes).eval()
    revive_zero_norms(m)  # random weights timed as they are: no branch folded away (catalog.weights)
    return m


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def onnx_at(m: torch.nn.Module, size: int, out_dir: Path) -> Path:
    return export_onnx(m, images(1, size), out_dir).path


def plain_p50(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    """The obvious timing loop anyone would write: warm up, time ``iters`` calls, take the median (ms)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def emit(name: str, title: str, body: str, no_write: bool) -> None:
    from bench._report import write_block

    if no_write:
        print(f"## {title}\n\n{body}")
    else:
        write_block(name, title, body)
        print(body)
