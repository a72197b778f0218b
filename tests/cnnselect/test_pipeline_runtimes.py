"""The pipeline with the deployed runtimes: OpenVINO INT8 and ExecuTorch measured and logged, LiteRT unavailable."""

from pathlib import Path

import pytest

from catalog import get_profile
from cnnselect.pipeline import evaluate_model
from evaluators.latency import LatencySettings
from registry import names
from registry.settings import Settings


@pytest.fixture(scope="module")
def outcomes(digits_root: Path, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    fast = LatencySettings(warmup=3, min_iters=30, min_seconds=0.0, large_batch=4)
    outs = evaluate_model(
        "test_resnet.r160_in1k", get_profile("smoke"), digits_root,
        ("openvino-int8", "executorch-xnnpack-fp32", "litert-fp32"), "rt1", "scratch", settings, latency=fast,
    )  # fmt: skip
    return {o.runner: o for o in outs}, settings


def test_runtimes_are_measured_and_logged(outcomes) -> None:
    import json

    import mlflow

    by, settings = outcomes
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    for runner, precision in (("openvino-int8", "int8"), ("executorch-xnnpack-fp32", "fp32")):
        o = by[runner]
        assert o.status == "ok", (runner, o.error)
        assert o.metrics["latency_p50_ms"] > 0 and 0.0 <= o.metrics["top1"] <= 1.0
        run = client.get_run(o.run_id)
        assert run.data.tags[names.TAG_RUNNER] == runner and run.data.params["precision"] == precision
        fp = json.loads(Path(client.download_artifacts(o.run_id, "fingerprint.json")).read_text())
        assert fp["runner"] == runner
    assert by["executorch-xnnpack-fp32"].metrics["top1_drop_vs_fp32"] == 0.0  # the same FP32 weights, same top-1


def test_litert_is_recorded_unavailable(outcomes) -> None:
    by, _ = outcomes
    lite = by["litert-fp32"]
    assert lite.status == "failed" and lite.stage == "runner"
    assert "unavailable here" in lite.error and "cnnselect[litert]" in lite.error


def test_openvino_ir_is_logged_whole(outcomes) -> None:
    import mlflow

    by, settings = outcomes
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    logged = {Path(f.path).name for f in client.list_artifacts(by["openvino-int8"].run_id, "deploy")}
    assert {"model.xml", "model.bin"} <= logged  # the whole IR, in a folder of its own beside MLflow's ONNX model


def test_int8_records_each_recipe_it_tried(outcomes) -> None:
    """INT8 is judged on the labelled calibration split against the FP32 export; past the allowed drop the runner's
    accuracy-controlled recipe is tried next; every attempt is logged and the chosen recipe is a param."""
    import json

    import mlflow

    from evaluators.runners import get_runner

    by, settings = outcomes
    o = by["openvino-int8"]
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    attempts = json.loads(Path(client.download_artifacts(o.run_id, "int8/attempts.json")).read_text())
    recipes = get_runner("openvino-int8").recipes
    assert [a["recipe"] for a in attempts] == list(recipes[: len(attempts)])
    first = attempts[0]
    assert first["max_drop"] == settings.int8_max_top1_drop  # no team in the default folder asks for less
    assert len(attempts) == (1 if first["drop"] <= first["max_drop"] else 2)
    for a in attempts:
        assert 0.0 <= a["calibration_top1"] <= 1.0
        assert abs(a["drop"] - (a["calibration_top1_fp32"] - a["calibration_top1"])) < 1e-12
    (chosen,) = [a for a in attempts if a["chosen"]]
    within = [a for a in attempts if a["drop"] <= a["max_drop"]]
    assert chosen == (within[0] if within else max(attempts, key=lambda a: a["calibration_top1"]))
    run = client.get_run(o.run_id)
    assert run.data.params["int8_recipe"] == chosen["recipe"]
    assert run.data.metrics["int8_attempts"] == len(attempts)
    assert run.data.metrics["int8_calibration_drop"] == chosen["drop"]


@pytest.mark.parametrize("runner", ["openvino-int8", "executorch-xnnpack-fp32"])
def test_a_host_answer_loads_its_runtime_and_reproduces_the_logged_logits(outcomes, digits_root: Path, runner) -> None:
    """``get_best`` on the CPU host pinned to one runtime: the answer names it, ``load()`` is that runtime's session
    on the run's deploy/ artifact, and preprocess + predict give the logits the measurement logged (predictions.csv)."""
    import csv

    import mlflow
    import numpy as np

    from evaluators.runners import RUNNER_PRECISION, get_runner
    from registry.client import Registry
    from registry.constraints import Constraints

    by, settings = outcomes
    reg = Registry(settings=settings)
    a = reg.get_best(Constraints(target="cpu-host", runtimes=(runner,)))
    assert a.candidate.run_id == by[runner].run_id
    assert (a.runtime, a.precision, a.threads) == (runner, RUNNER_PRECISION[runner], "all" if "openvino" in runner
                                                   else "default")  # fmt: skip
    assert a.host.startswith("cpu-") and f"runtime {runner}" in a.explain()
    deployed = reg.deployed(a.candidate)
    assert deployed.suffix == (".xml" if "openvino" in runner else ".pte") and deployed.parent.name == "deploy"
    session = a.load()
    assert type(session).__name__ == type(get_runner(runner).load(deployed)).__name__  # the runtime's own session

    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    logged = Path(client.download_artifacts(a.candidate.run_id, "predictions/predictions.csv"))
    rows = list(csv.DictReader(logged.open()))[:6]
    x = a.preprocess([digits_root / r["path"] for r in rows])
    logits = a.predict(x)
    assert logits.shape[0] == len(rows)
    for row, out in zip(rows, logits, strict=True):
        top = [float(row[f"logit{i}"]) for i in range(1, 6)]
        np.testing.assert_allclose(np.sort(out)[::-1][:5], top, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(get_runner(runner).predict(session, x), logits)  # load() runs as predict() does


def test_the_cpu_host_weighs_both_runtimes_measured_here(outcomes) -> None:
    from registry import hosts
    from registry.client import Registry
    from registry.constraints import Constraints

    by, settings = outcomes
    reg = Registry(settings=settings)
    k = Constraints(target="cpu-host", objective="latency")
    a = reg.get_best(k)
    assert a.runtime in ("openvino-int8", "executorch-xnnpack-fp32")
    assert a.candidate.version == hosts.select(reg.candidates("digits"), k)[0].candidate.version
    assert {c.runner for c in a.pool} == {"openvino-int8", "executorch-xnnpack-fp32"}  # one machine: both weighed
