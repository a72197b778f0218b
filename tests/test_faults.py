"""Fault battery: each bad input gets a clear, typed error, is recorded where it concerns, and loses nothing logged.

MLflow down and SQLite contention are in ``test_faults_tracking.py``, a worker killed mid-task in
``test_faults_worker.py``; concurrent promotions are covered with the promotion tests.
"""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.gates import GateError
from registry.settings import Settings
from tests.evaluators.test_data import _user_folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('faults') / 'mlflow.db'}"


@pytest.fixture
def settings(store: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CNNSELECT_TRACKING_URI", store)  # one SQLite store per module; tests keep apart by dataset
    return Settings()


def _gate_runs(settings: Settings, dataset: str) -> list:
    import mlflow

    from registry import names

    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    exp = client.get_experiment_by_name(names.experiment_name(dataset))
    return client.search_runs([exp.experiment_id], filter_string="tags.`cnnselect.gate` = 'cnnselect.heldout_data'")


def _artifact_json(settings: Settings, run_id: str, path: str) -> dict:
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def test_corrupt_truncated_and_bomb_images_are_quarantined_and_too_many_stop_the_sweep(
    settings: Settings, tmp_path: Path, digits_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnselect import jobs

    root = _user_folder(tmp_path / "corrupt", digits_root)
    first = jobs.prepare_data(str(root), settings)  # a clean folder passes, and its gate run is kept
    assert first["gate"]["success"] and first["quarantined"] == {}
    (root / "heldout" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = next((root / "heldout" / "dog").glob("*.png")).read_bytes()
    (root / "heldout" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (4000, 4000)).save(root / "train" / "cat" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    second = jobs.prepare_data(str(root), settings)  # a few bad files: quarantined by name, the sweep goes on
    assert second["gate"]["success"] and second["digest"] == first["digest"]  # the usable images did not change
    assert set(second["quarantined"]) == {"heldout/cat/broken.png", "heldout/dog/truncated.png", "train/cat/bomb.png"}
    saved = _artifact_json(settings, second["gate"]["run_id"], "gates/cnnselect.heldout_data.json")
    assert set(saved["quarantined"]) == set(second["quarantined"])  # and in MLflow, with the reasons
    for i in range(40):  # more than CNNSELECT_MAX_QUARANTINED_FRACTION of the split: unusable, fail closed
        (root / "heldout" / "cat" / f"junk_{i:02d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(GateError, match=r"gate cnnselect.heldout_data failed for dataset corrupt .*quarantined"):
        jobs.prepare_data(str(root), settings)
    runs = {r.data.tags["cnnselect.gate_status"]: r for r in _gate_runs(settings, "corrupt")}
    assert set(runs) == {"passed", "failed"}  # the earlier passing records are still there
    failed = runs["failed"]
    assert failed.info.status == "FAILED"
    saved = _artifact_json(settings, failed.info.run_id, "gates/cnnselect.heldout_data.json")
    assert saved["success"] is False and not saved["validation"]["heldout_quarantine"]["success"]
    assert "heldout/cat/junk_00.jpg" in saved["quarantined"]


def test_wrong_label_map_is_refused(settings: Settings, tmp_path: Path, digits_root: Path) -> None:
    from cnnselect import jobs

    root = _user_folder(tmp_path / "labels", digits_root)
    with pytest.raises(GateError, match=r"'label'.*'dog'"):
        jobs.prepare_data(str(root), settings, classes=["cat", "cow"])
    assert [r.data.tags["cnnselect.gate_status"] for r in _gate_runs(settings, "labels")] == ["failed"]


def test_unknown_architecture_is_a_recorded_failure(settings: Settings, digits_root: Path) -> None:
    from catalog import get_profile
    from cnnselect.pipeline import evaluate_model
    from registry.tracking import sweep_runs

    (out,) = evaluate_model("resnet_nope", get_profile("smoke"), digits_root, ("cpu",), "faults-1", settings=settings)
    assert out.status == "failed" and out.stage == "resolve"
    assert "unknown catalog entry 'resnet_nope'" in (out.error or "") or "resnet_nope" in (out.error or "")
    assert "Available:" in (out.error or "")
    runs = sweep_runs(settings, "digits", "faults-1")
    assert [(r["status"], r["tags"]["cnnselect.stage"]) for r in runs] == [("failed", "resolve")]


def test_onnx_export_failure_is_typed(tmp_path: Path) -> None:
    from evaluators.export import ExportError, export_onnx

    class NoOnnxOp(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eig(x[0, 0])[0].real  # traceable, but ONNX has no eigendecomposition operator

    with pytest.raises(ExportError, match="ONNX export failed: ConversionError"):
        export_onnx(NoOnnxOp(), np.ones((1, 3, 8, 8), np.float32), tmp_path / "out")


@pytest.mark.slow
def test_nan_metric_fails_the_results_gate_and_nothing_is_registered(
    settings: Settings, tmp_path: Path, digits_root: Path
) -> None:
    """A checkpoint of NaN weights, through the real pipeline: measured, gated, recorded, not registered."""
    import mlflow
    import timm

    from catalog import get_profile
    from cnnselect.pipeline import evaluate_model
    from evaluators.latency import LatencySettings
    from registry import names

    model = timm.create_model("test_resnet", num_classes=10)
    state = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = tmp_path / "nan.pt"
    torch.save(state, ckpt)
    data = tmp_path / "nan-digits"
    shutil.copytree(digits_root, data)
    fast = LatencySettings(warmup=2, min_iters=10, min_seconds=0.0, large_batch=0)
    (out,) = evaluate_model(
        "test_resnet.r160_in1k", get_profile("smoke"), data, ("cpu",), "nan-1", f"file:{ckpt}", settings, latency=fast
    )
    assert out.status == "failed" and out.stage == "gate", out
    assert "gate cnnselect.results failed" in (out.error or "") and "onnx_parity_max_abs_diff" in (out.error or "")
    saved = mlflow.artifacts.load_dict(f"runs:/{out.run_id}/gates/cnnselect.results.json")
    assert saved["success"] is False
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    assert client.search_model_versions(f"name = '{names.registered_model_name('nan-digits')}'") == []


def test_unsatisfiable_constraints_name_the_nearest_misses() -> None:
    from registry.constraints import Constraints
    from registry.errors import NoFeasibleModelError
    from registry.selection import Candidate, select

    metrics = {"top1": 0.9, "top1_ci_low": 0.88, "latency_p95_ms": 5.0, "latency_p95_ub_ms": 5.5, "size_mb": 3.0}
    pool = [
        Candidate(
            "cnnselect-digits",
            str(i),
            f"r{i}",
            f"m{i}",
            "resnet",
            "cpu",
            "fp32",
            "fp",
            {**metrics, "onnx_parity_ok": 1.0, "params_m": float(i)},
        )
        for i in (1, 2)
    ]
    with pytest.raises(NoFeasibleModelError, match="satisf") as info:
        select(pool, Constraints(target="cpu", min_top1=0.99, max_latency_ms=1.0))
    assert info.value.nearest and all(v.failed for v in info.value.nearest)
    assert {c.constraint for v in info.value.nearest for c in v.failed} == {"min_top1", "max_latency_ms"}


def test_team_file_with_unknown_keys_or_injected_text_is_refused(tmp_path: Path) -> None:
    from registry.errors import InvalidTeamError
    from registry.teams import parse_team

    bad = tmp_path / "vision.yaml"
    bad.write_text("name: vision\nconstraints: {target: cpu}\nowner: me\n")
    with pytest.raises(
        InvalidTeamError, match=r"vision.yaml: invalid team file(.|\n)*unknown Team key 'owner'. Valid:"
    ):
        parse_team(bad)
    bad.write_text("name: vision\nconstraints: {target: cpu, min_top1: 0.9, max_latency: 3}\n")
    with pytest.raises(InvalidTeamError, match=r"vision.yaml: invalid team file(.|\n)*max_latency"):
        parse_team(bad)
    bad.write_text("name: \"vision' or '1'='1\"\nconstraints: {target: cpu}\n")
    with pytest.raises(InvalidTeamError, match="name"):
        parse_team(bad)
    bad.write_text("name: vision\nconstraints: {target: cpu, dataset: \"digits' OR name != '\"}\n")
    with pytest.raises(InvalidTeamError, match="dataset"):
        parse_team(bad)
    bad.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(InvalidTeamError, match="cannot read team file"):
        parse_team(bad)
