"""A model prepared once for every runner: two jobs (as two queues' workers) share one export and one FP32 reference."""

import gc
import json
import logging
from pathlib import Path

import pytest

from catalog import get_profile
from cnnselect import prepared, stages
from cnnselect.pipeline import evaluate_model, preparation_key
from evaluators.latency import LatencySettings
from registry.settings import Settings

MODEL = "test_resnet.r160_in1k"
FAST = LatencySettings(warmup=2, min_iters=20, min_seconds=0.0, large_batch=0)


def _stages(settings: Settings, run_id: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    return json.loads(Path(client.download_artifacts(run_id, "stages/stages.json")).read_text())


FROZEN_AT_COLLECTIONS: list[int] = []  # gc.get_freeze_count() at each collection during two_queues' jobs


@pytest.fixture(scope="module")
def two_queues(digits_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``edge`` then ``cpu`` measured by two jobs, one after the other, as the edge and default queues' tasks are.

    The second is the reference runner: its held-out logits are the prepared FP32 reference's, read back. Each
    collection the jobs trigger records how many objects were frozen then (``FROZEN_AT_COLLECTIONS``).
    """
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    smoke = get_profile("smoke")
    gc.unfreeze()

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            FROZEN_AT_COLLECTIONS.append(gc.get_freeze_count())

    gc.callbacks.append(seen)
    try:
        (edge,) = evaluate_model(MODEL, smoke, digits_root, ("edge",), "q1", "scratch", settings, latency=FAST)
        FROZEN_AT_COLLECTIONS.append(-1)  # between the jobs
        (cpu,) = evaluate_model(MODEL, smoke, digits_root, ("cpu",), "q1", "scratch", settings, latency=FAST)
    finally:
        gc.callbacks.remove(seen)
    FROZEN_AT_COLLECTIONS.append(gc.get_freeze_count())  # after both
    return settings, cpu, edge


def test_each_job_runs_with_the_heap_it_started_with_frozen(two_queues) -> None:
    """Full collections inside a job skip the process's imports (``evaluators.memory.frozen_heap``); after it, not."""
    *during, after = FROZEN_AT_COLLECTIONS
    first, second = during[: during.index(-1)], during[during.index(-1) + 1 :]
    assert first and second, FROZEN_AT_COLLECTIONS  # each job collected at least once
    assert min(first + second) > 0, FROZEN_AT_COLLECTIONS  # every collection inside a job: the heap frozen
    assert after == 0  # given back


def test_two_jobs_prepare_a_model_once(two_queues) -> None:
    settings, cpu, edge = two_queues
    assert cpu.status == "ok" and edge.status == "ok", (cpu.error, edge.error)
    first, second = _stages(settings, edge.run_id), _stages(settings, cpu.run_id)
    assert first["job"] != second["job"] and first["prepared_key"] == second["prepared_key"]
    assert (first["prepared"], second["prepared"]) == ("prepared here", "reused")
    total = stages.summed_stages([first, second])[MODEL]
    assert total["export"] == total["reference"] == total["pull"] == total["size"] == 1, total
    assert total["latency_cpu"] == total["latency_edge"] == total["prepare_edge"] == total["calibration_fp32"] == 1
    assert "accuracy_cpu" not in total  # the FP32 reference's logits are the cpu runner's held-out inference
    assert max(total.values()) == 1, total  # nothing ran twice for the model
    assert cpu.metrics["top1"] == cpu.metrics["top1_fp32"] == edge.metrics["top1_fp32"]
    assert cpu.metrics["pull_seconds"] == edge.metrics["pull_seconds"]  # spent once, where it was prepared


def test_size_mb_is_the_deployed_artifact_and_fp32_size_mb_the_export(two_queues) -> None:
    _, cpu, edge = two_queues
    assert cpu.metrics["size_mb"] == pytest.approx(cpu.metrics["fp32_size_mb"])  # cpu deploys the FP32 export
    assert edge.metrics["fp32_size_mb"] == pytest.approx(cpu.metrics["fp32_size_mb"])  # the same export
    assert edge.metrics["size_mb"] != pytest.approx(edge.metrics["fp32_size_mb"])  # edge deploys its INT8 graph


def test_a_broken_prepared_model_is_prepared_again(
    two_queues, digits_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from evaluators.data import load_manifest

    settings, cpu, _ = two_queues  # torch-cpu, a third queue's job, finds the prepared model broken
    manifest = load_manifest(digits_root, settings.manifest_dir)
    key = preparation_key(MODEL, get_profile("smoke"), "scratch", manifest.digest, settings.seed)
    folder = prepared.prepared_dir(settings.cache_dir, MODEL, key)
    held = manifest.split("heldout").count
    assert prepared.load(folder, key, held) is not None
    data = folder / "fp32" / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:100])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="cnnselect.prepared"):
        assert prepared.load(folder, key, held) is None
    assert "fp32/model.onnx.data is missing or not the" in caplog.text and not folder.exists()
    (torch_cpu,) = evaluate_model(
        MODEL, get_profile("smoke"), digits_root, ("torch-cpu",), "q1", "scratch", settings, latency=FAST
    )
    assert torch_cpu.status == "ok", torch_cpu.error
    again = _stages(settings, torch_cpu.run_id)
    assert again["prepared"] == "prepared here" and again["stages"]["export"] == 1
    assert torch_cpu.metrics["top1_fp32"] == cpu.metrics["top1_fp32"]  # the same model, prepared the same way
    assert prepared.load(folder, key, held) is not None


@pytest.mark.slow  # a spawned worker process imports torch, onnxruntime and MLflow afresh
def test_another_process_reuses_the_prepared_model(
    digits_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process of its own (as another queue's worker is) finds what this one prepared, by its key."""
    from cnnselect import jobs

    monkeypatch.setenv("CNNSELECT_HOME", str(tmp_path / "home"))
    fast = {"warmup": 2, "min_iters": 20, "min_seconds": 0.0, "large_batch": 0}
    (here,) = jobs.evaluate(MODEL, "smoke", str(digits_root), ["torch-cpu"], "p1", "scratch", latency=fast)
    (there,) = jobs.evaluate_isolated(MODEL, "smoke", str(digits_root), ["cpu"], "p1", "scratch", latency=fast)
    assert here["status"] == there["status"] == "ok", (here, there)
    settings = Settings()
    records = [_stages(settings, here["run_id"]), _stages(settings, there["run_id"])]
    assert [r["prepared"] for r in records] == ["prepared here", "reused"]
    total = stages.summed_stages(records)[MODEL]
    assert total["export"] == total["reference"] == 1 and max(total.values()) == 1, total
