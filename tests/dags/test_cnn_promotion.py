"""The promotion DAG for real: dag.test() against a real MLflow store with logged evaluations and team files."""

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO


def _load_dag():
    spec = importlib.util.spec_from_file_location("cnn_promotion_dagfile", REPO / "dags" / "cnn_promotion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dag


def test_promotion_dag_moves_each_team_alias_once(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from registry.client import Registry
    from registry.settings import Settings
    from tests.registry.conftest import log_one

    monkeypatch.setenv("CNNSELECT_HOME", str(tmp_path / "home"))
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "cloud.yaml").write_text("name: cloud\nconstraints: {dataset: dagds, target: cpu, min_top1: 0.8}\n")
    (teams / "strict.yaml").write_text("name: strict\nconstraints: {dataset: dagds, target: cpu, min_top1: 0.99}\n")
    settings = Settings()
    onnx = _tiny_onnx(tmp_path)
    logged = log_one(settings, onnx, "dagds", "good", top1=0.95, top1_ci_low=0.93, top1_ci_high=0.97)

    dag = _load_dag()
    run = dag.test(run_conf={"teams_dir": str(teams)})
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("promote", 0)] == "success" and states[("promote", 1)] == "success"
    aliases = MlflowClient(settings.resolved_tracking_uri).get_registered_model("cnnselect-dagds").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"team-cloud": str(logged.version)}  # strict: nothing qualifies
    assert Registry(teams_dir=teams).get_champion("cloud").candidate.variant == "good"

    rerun = dag.test(run_conf={"teams_dir": str(teams)})  # idempotent: nothing new, nothing moves
    assert rerun.state == "success"
    from registry.promotion import history

    assert len(history("cloud", Registry(teams_dir=teams))) == 1

    # a bad team file: the good teams are still promoted and reported, the run is red and names the file
    (teams / "broken.yaml").write_text("name: broken\nconstraints: {dataset: dagds, target: cpu, min_top1: 95}\n")
    (teams / "typo.yaml").write_text("name: typo\nconstraints: {dataset: dagds, targt: cpu}\n")
    bad = dag.test(run_conf={"teams_dir": str(teams)})
    assert bad.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in bad.get_task_instances()}
    assert states[("list_teams", -1)] == "success" and states[("report", -1)] == "failed", states
    assert [s for (task, _), s in sorted(states.items()) if task == "promote"] == ["success", "success"]
    from registry.teams import scan_teams

    message = str(scan_teams(teams).error())
    assert "2 of 4 team files" in message and "broken.yaml" in message and "typo.yaml" in message


def _tiny_onnx(tmp_path: Path):
    import numpy as np
    import torch

    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.export import export_onnx

    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp_path / "onnx")
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    return art.path, x, y
