"""Registry fixtures: one real MLflow store per module (SQLite and PostgreSQL), candidates as real versions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.settings import Settings
from registry.tracking import DatasetRef, Evaluation, Logged
from registry.writes import log_evaluation

BASE = {
    "top1": 0.9,
    "top1_ci_low": 0.88,
    "top1_ci_high": 0.92,
    "latency_p95_ms": 2.0,
    "latency_p95_ub_ms": 2.2,
    "params_m": 1.0,
    "size_mb": 0.5,
    "gmacs": 0.01,
    "memory_rss_mb": 10.0,
    "top1_drop_vs_fp32": 0.0,
    "onnx_parity_ok": 1.0,
}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.export import export_onnx

    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp_path_factory.mktemp("onnx"))
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    return art.path, x, y


@pytest.fixture(scope="module")
def shared_store(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), tracking_uri=tracking_uri)


def log_one(
    store: Settings, tiny_onnx, ds: str, variant: str = "v", runner: str = "cpu", preprocess: dict | None = None,
    artifacts: dict[str, Path] | None = None, **metrics: float,
) -> Logged:  # fmt: skip
    """One real evaluation logged and registered the way the pipeline does it (its host id from its fingerprint)."""
    from evaluators.runners import RUNNER_PRECISION, runner_host_id

    path, x, y = tiny_onnx
    ref = DatasetRef(ds, "d" * 64, str(Path(path).parent), tuple("0123456789"), "h" * 64, 450)
    fingerprint = {"cpu_model": "x", "batch_size": "1", "threads": "all"}
    ev = Evaluation(
        variant, "efficientnet", runner, RUNNER_PRECISION[runner], ref, f"key-{variant}-{runner}",
        "sweep-1", fingerprint, "fp1", "w" * 64, "scratch", path,
        x[:1], y[:1], {"variant": variant}, {**BASE, **metrics}, preprocess=preprocess or {},
        host=runner_host_id(runner, fingerprint), artifacts=dict(artifacts or {}),
    )  # fmt: skip
    return log_evaluation(store, ev)


@pytest.fixture
def add_version(shared_store: Settings, tiny_onnx) -> Callable[..., str]:
    """More candidates, cheaply: real versions of the same registered model pointing at a real logged artifact.

    ``add_version(ds, variant, runner="cpu", fingerprint="fp1", source=None, host=None, **metrics)`` returns the
    version; ``host`` (a host id) replaces the first logged version's.
    """
    from mlflow import MlflowClient

    from evaluators.runners import RUNNER_PRECISION
    from registry import names

    client = MlflowClient(shared_store.resolved_tracking_uri)
    base: dict[str, Logged] = {}

    def add(ds: str, variant: str, runner: str = "cpu", fingerprint: str = "fp1", source: str | None = None,
            host: str | None = None, **metrics: float) -> str:  # fmt: skip
        if ds not in base:
            base[ds] = log_one(shared_store, tiny_onnx, ds, variant, runner, **metrics)
            if fingerprint == "fp1" and source is None and host is None:
                return str(base[ds].version)
        model = names.registered_model_name(ds)
        seed = client.get_model_version(model, str(base[ds].version))
        tags = {
            **seed.tags, names.TAG_VARIANT: variant, names.TAG_RUNNER: runner, names.TAG_FINGERPRINT: fingerprint,
            names.TAG_PRECISION: RUNNER_PRECISION[runner],
        }  # fmt: skip
        if host is not None:
            tags[names.TAG_HOST] = host
        tags = names.version_tags(tags, {**BASE, **metrics})  # as the pipeline registers it (its own card)
        mv = client.create_model_version(model, source or seed.source, run_id=seed.run_id, tags=tags)
        return str(mv.version)

    return add


@pytest.fixture
def ds(request: pytest.FixtureRequest) -> str:
    """A dataset name per test (and store): its own experiment and registered model in the shared store.

    Parameters other than the store make it distinct too (``test_x[sqlite-a]`` and ``test_x[sqlite-b]`` share a
    store, so they must not share a registered model).
    """
    name, _, params = request.node.name.partition("[")
    extra = [p for p in params.rstrip("]").split("-") if p and p not in ("sqlite", "postgresql")]
    suffix = "-" + hashlib.sha1("-".join(extra).encode()).hexdigest()[:6] if extra else ""
    return name.replace("test_", "r-")[: 50 - len(suffix)] + suffix
