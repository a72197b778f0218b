"""The evaluation DAG for real: dag.test() on the reduced setting against a fresh MLflow store."""

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _load_dag():
    spec = importlib.util.spec_from_file_location("cnn_evaluation_dagfile", REPO / "dags" / "cnn_evaluation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dag


def test_dag_runs_logs_registers_and_answers(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import timm
    from safetensors.torch import save_file

    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.settings import Settings

    monkeypatch.setenv("CNNSELECT_HOME", str(tmp_path / "home"))
    dag = _load_dag()
    # a typo is refused before any work, naming the closest model; nothing is logged
    typo = dag.test(run_conf={"profile": "smoke", "models": ["test_efficientnet.r160_in1"], "runners": ["cpu"]})
    assert typo.state == "failed"
    first = {(ti.task_id, ti.map_index): ti.state for ti in typo.get_task_instances()}
    assert first[("plan", -1)] == "failed" and first[("summarize", -1)] == "skipped", first  # no asset
    assert first[("verdict", -1)] == "failed"  # the run's leaf: red
    assert {state for (task, _), state in first.items() if task in ("pull", "measure_default")} == {"upstream_failed"}

    # a checkpoint that fits one model: the other is a broken model, red where it broke, the first still measured
    ckpt = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet.r160_in1k", num_classes=10).state_dict(), str(ckpt))
    conf = {
        "profile": "smoke",
        "models": ["test_resnet.r160_in1k", "test_efficientnet.r160_in1k"],
        "runners": ["cpu", "edge"],
        "weights": f"file:{ckpt}",
    }
    run = dag.test(run_conf=conf)
    assert run.state == "failed"  # red: a model failed, though the other was measured, registered and announced
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("pull", 0)] == states[("pull", 1)] == "success"  # a file source trains nothing: loaded when measured
    # one host (no CNNSELECT_QUEUES): one measure task, an item per model measuring its runners
    assert states[("measure_default", 0)] == "success" and states[("measure_default", 1)] == "failed", states
    assert not any(task.startswith("measure_") and task != "measure_default" for task, _ in states)  # no noise
    assert states[("summarize", -1)] == "success" and states[("verdict", -1)] == "failed"

    settings = Settings()
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    exp = client.get_experiment_by_name("cnnselect/digits")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`cnnselect.sweep` = '{run.run_id}'")
    ok = [r for r in runs if r.data.tags["cnnselect.status"] == "ok"]
    failed = [r for r in runs if r.data.tags["cnnselect.status"] == "failed"]
    assert {(r.data.tags["cnnselect.variant"], r.data.tags["cnnselect.runner"]) for r in ok} == {
        ("test_resnet.r160_in1k", "cpu"),
        ("test_resnet.r160_in1k", "edge"),
    }
    assert {r.data.tags["cnnselect.variant"] for r in failed} == {"test_efficientnet.r160_in1k"}
    assert "test_efficientnet.r160_in1k: the checkpoint" in failed[0].data.tags["cnnselect.error"]  # names the fix
    for r in ok:  # the dataset is logged as an input with its digest; metrics are real and in range
        assert r.inputs.dataset_inputs[0].dataset.name == "digits"
        assert 0.0 <= r.data.metrics["top1"] <= 1.0 and r.data.metrics["latency_p95_ms"] > 0
    versions = client.search_model_versions("name = 'cnnselect-digits'")
    assert len(versions) == 2

    answer = Registry(settings=settings).get_best(Constraints(target="edge"))
    assert answer.candidate.variant == "test_resnet.r160_in1k" and answer.uri.startswith("models:/cnnselect-digits/")

    # a rerun with nothing new measures nothing and registers nothing
    rerun = dag.test(run_conf={**conf, "models": ["test_resnet.r160_in1k"]})
    assert rerun.state == "success"
    again = {(ti.task_id, ti.map_index): ti.state for ti in rerun.get_task_instances()}
    assert again[("measure_default", 0)] == "skipped"  # not green as work
    assert len(client.search_model_versions("name = 'cnnselect-digits'")) == 2
    assert client.search_runs([exp.experiment_id], filter_string=f"tags.`cnnselect.sweep` = '{rerun.run_id}'") == []


def test_two_queues_tasks_share_one_prepared_model(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two measure tasks per model (default: cpu, edge: edge): the model is exported and referenced once in all."""
    import json

    import mlflow

    from cnnselect.stages import summed_stages
    from registry.settings import Settings

    monkeypatch.setenv("CNNSELECT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNSELECT_QUEUES", "default,edge")  # read when the DAG file is parsed
    dag = _load_dag()
    conf = {"profile": "smoke", "models": ["test_resnet.r160_in1k"], "runners": ["cpu", "edge"], "weights": "scratch"}
    run = dag.test(run_conf=conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states[("measure_default", 0)] == states[("measure_edge", 0)] == "success"
    client = mlflow.MlflowClient(Settings().resolved_tracking_uri)
    exp = client.get_experiment_by_name("cnnselect/digits")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`cnnselect.sweep` = '{run.run_id}'")
    assert sorted(r.data.tags["cnnselect.runner"] for r in runs) == ["cpu", "edge"]
    records = [
        json.loads(Path(client.download_artifacts(r.info.run_id, "stages/stages.json")).read_text()) for r in runs
    ]
    assert sorted(r["prepared"] for r in records) == ["prepared here", "reused"]  # whichever task ran first
    total = summed_stages(records)["test_resnet.r160_in1k"]
    assert total["export"] == total["reference"] == 1 and max(total.values()) == 1, total
