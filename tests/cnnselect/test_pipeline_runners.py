"""The pipeline with the torch runners: artifacts, batch-N latency and an unavailable GPU recorded as a failed run."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from catalog import get_profile
from cnnselect.pipeline import evaluate_model
from evaluators.latency import LatencySettings
from registry import names
from registry.settings import Settings


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine spinning torch threads make the latency CoV fail the gate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_torch_runners_through_the_pipeline(digits_root: Path, tmp_path: Path, one_torch_thread: None) -> None:
    import mlflow

    settings = Settings(home=tmp_path)
    fast = LatencySettings(warmup=3, min_iters=30, min_seconds=0.0, large_batch=4)
    outs = evaluate_model(
        "test_resnet.r160_in1k", get_profile("smoke"), digits_root, ("torch-cpu", "gpu"), "t1", "scratch", settings,
        latency=fast,
    )  # fmt: skip
    by = {o.runner: o for o in outs}
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    gpu = by["gpu"]
    if torch.cuda.is_available():
        assert gpu.status == "ok" and gpu.metrics["memory_gpu_peak_mb"] > 0
    else:
        assert gpu.status == "failed" and gpu.stage == "runner" and "torch.cuda.is_available() is False" in gpu.error
        failed = client.get_run(gpu.run_id)
        assert failed.info.status == "FAILED" and "unavailable here" in failed.data.tags[names.TAG_ERROR]
    ok = by["torch-cpu"]
    assert ok.status == "ok", ok.error
    m = ok.metrics
    assert m["throughput_ips_b4"] > 0 and m["latency_samples_b4"] >= 5 and "latency_p95_ub_ms" in m
    assert 0.0 <= m["top1_worst_class"] <= m["top1"] and m["top1_drop_vs_fp32"] == 0.0  # the same FP32 weights
    logged = {
        f.path
        for d in ("confusion_matrix", "per_class_accuracy", "deploy")
        for f in client.list_artifacts(ok.run_id, d)
    }
    assert logged == {
        "confusion_matrix/confusion_matrix.png",
        "per_class_accuracy/per_class_accuracy.csv",
        "deploy/weights.safetensors",  # the torch artifact, whole, in a folder of its own
        "deploy/torch_model.json",
    }
    run = client.get_run(ok.run_id)
    assert run.data.tags[names.TAG_RUNNER] == "torch-cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-host path: a GPU here would make gpu available")
def test_an_unavailable_runner_fails_before_any_training_or_export(digits_root: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    (out,) = evaluate_model(
        "test_resnet.r160_in1k", get_profile("smoke"), digits_root, ("gpu",), "t2", "finetune", settings
    )
    assert out.status == "failed" and out.stage == "runner" and "unavailable here" in (out.error or "")
    assert not (settings.cache_dir / "weights").exists()  # nothing was trained for a runner that cannot run
    assert not (settings.cache_dir / "tensors").exists()  # nor a single image preprocessed
    assert not (settings.cache_dir / "prepared").exists()  # nor a model exported
