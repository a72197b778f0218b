"""The registry against real MLflow stores: SQLite and the running PostgreSQL (same suite, URI swapped)."""

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from registry import NoFeasibleModelError
from registry.client import Registry, local_dir
from registry.constraints import Constraints
from registry.settings import Settings
from registry.tracking import DatasetRef, Evaluation, find_finished
from registry.writes import log_evaluation, log_failure


@pytest.fixture(scope="module")
def onnx_model(tiny_onnx):
    """The tiny exported model of tests/registry/conftest.py: (onnx path, input batch, torch logits)."""
    return tiny_onnx


def _evaluation(onnx_model, ds_name: str, variant: str, key: str, runner: str = "cpu", **metrics: float) -> Evaluation:
    path, x, y = onnx_model
    ds = DatasetRef(ds_name, "d" * 64, str(path.parent), tuple("0123456789"), "h" * 64, 450)
    base = {
        "top1": 0.9,
        "top1_ci_low": 0.87,
        "latency_p95_ms": 2.0,
        "latency_p95_ub_ms": 2.2,
        "params_m": 1.0,
        "size_mb": 0.5,
        "gmacs": 0.01,
        "onnx_parity_ok": 1.0,
    }
    return Evaluation(
        variant,
        "efficientnet",
        runner,
        "int8" if runner == "edge" else "fp32",
        ds,
        key,
        "sweep-1",
        {"cpu_model": "x"},
        "fp1",
        "w" * 64,
        "scratch",
        path,
        x[:1],
        y[:1],
        {"variant": variant},
        {**base, **metrics},
    )


@pytest.fixture(scope="module")
def store(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), tracking_uri=tracking_uri)


@pytest.fixture
def ds(request: pytest.FixtureRequest) -> str:
    """A dataset name per test: its own experiment and registered model in the shared store."""
    return request.node.name.split("[")[0].replace("test_", "d-")[:60]


def test_a_registered_version_serves_through_mlflows_pyfunc_from_its_signature(store: Settings, onnx_model, ds: str):
    """What production code does with ``get_best``'s URI: MLflow's pyfunc loads it and predicts a batch of any size.

    The version carries the signature and no input example (MLflow would keep the example tensor as JSON, twice), so
    this is the check MLflow's serving-input validation made at every log.
    """
    import mlflow

    _, x, y = onnx_model
    logged = log_evaluation(store, _evaluation(onnx_model, ds, "served", "k-served"))
    mlflow.set_tracking_uri(store.resolved_tracking_uri)
    model = mlflow.pyfunc.load_model(logged.model_uri)
    inputs = model.metadata.get_input_schema().inputs
    assert [(s.type, s.shape) for s in inputs] == [(np.dtype("float32"), (-1, *x.shape[1:]))]
    (out,) = model.predict(x).values()  # two images, though the signature was inferred from one
    np.testing.assert_allclose(out, y, rtol=1e-3, atol=1e-4)
    assert model.metadata.saved_input_example_info is None


def test_log_register_and_get_best(store: Settings, onnx_model, ds: str) -> None:
    a = log_evaluation(store, _evaluation(onnx_model, ds, "small", "k1", top1=0.93, top1_ci_low=0.9, params_m=0.5))
    b = log_evaluation(store, _evaluation(onnx_model, ds, "big", "k2", top1=0.97, top1_ci_low=0.95, params_m=20.0))
    log_evaluation(store, _evaluation(onnx_model, ds, "edgy", "k3", runner="edge", top1=0.99, top1_ci_low=0.98))
    assert a.version and b.version and a.version != b.version
    reg = Registry(settings=store)
    assert len(reg.candidates(ds)) == 3

    best = reg.get_best(
        Constraints(dataset=ds, max_latency_ms=5, latency_percentile=95, max_params_m=10, min_top1=0.85)
    )
    assert best.candidate.variant == "small" and best.uri == f"models:/cnnselect-{ds}/{a.version}"
    assert best.metrics["top1"] == pytest.approx(0.93)
    assert "chosen: small" in best.explain() and "big" in best.explain()
    assert reg.get_best(Constraints(dataset=ds)).candidate.variant == "big"  # no budget: highest top-1 on cpu
    assert reg.get_best(Constraints(dataset=ds, target="edge")).candidate.variant == "edgy"

    _, x, y = onnx_model
    np.testing.assert_allclose(best.load().run(None, {"input": x})[0], y, atol=1e-4)
    # artifacts under CNNSELECT_HOME on SQLite and PostgreSQL alike, never ./mlruns of the working directory
    assert local_dir(best.candidate.artifact_uri).startswith(str(store.artifact_root.resolve()))

    with pytest.raises(NoFeasibleModelError, match="max_params_m") as err:
        reg.get_best(Constraints(dataset=ds, max_params_m=0.1))
    assert {v.candidate.variant for v in err.value.nearest} == {"small", "big"}

    # what a person reads on the version's page: the model, runner, dataset and headline figures, in Markdown
    from mlflow import MlflowClient

    client = MlflowClient(store.resolved_tracking_uri, registry_uri=store.resolved_tracking_uri)
    text = client.get_model_version(f"cnnselect-{ds}", a.version).description
    assert text.startswith(f"**small** on `cpu` (fp32), dataset `{ds}`") and "| 0.930 | 0.900 to " in text
    run = client.get_run(a.run_id)  # the run's dataset input carries the same digest as the dataset tag
    (ds_input,) = run.inputs.dataset_inputs
    assert run.data.tags["cnnselect.dataset_digest"].startswith(ds_input.dataset.digest)


def test_logging_leaves_the_environment_tracking_uri_alone(
    store: Settings, onnx_model, ds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    log_evaluation(store, _evaluation(onnx_model, ds, "m", "k-env"))
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow's set_tracking_uri exports it; we put it back
    assert Settings(home=tmp_path).resolved_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_metrics_land_on_the_run_and_on_the_logged_model(store: Settings, onnx_model, ds: str) -> None:
    from mlflow import MlflowClient

    logged = log_evaluation(store, _evaluation(onnx_model, ds, "m", "k-lm", top1=0.93))
    client = MlflowClient(store.resolved_tracking_uri)
    run = client.get_run(logged.run_id)
    assert run.data.metrics["top1"] == pytest.approx(0.93)
    (output,) = run.outputs.model_outputs
    on_model = {m.key: m.value for m in client.get_logged_model(output.model_id).metrics or []}
    assert on_model["top1"] == pytest.approx(0.93)  # the MLflow UI's model page shows them


def test_loaded_artifact_is_the_logged_model(store: Settings, onnx_model, ds: str) -> None:
    log_evaluation(store, _evaluation(onnx_model, ds, "m", "k9"))
    _, x, y = onnx_model
    got = Registry(settings=store).get_best(Constraints(dataset=ds)).load().run(None, {"input": x[:1]})[0]
    np.testing.assert_allclose(got, y[:1], atol=1e-4)


def test_nan_metric_is_never_stored_as_zero_nor_chosen(store: Settings, onnx_model, ds: str) -> None:
    log_evaluation(
        store, _evaluation(onnx_model, ds, "nan_lat", "k4", latency_p95_ms=math.nan, latency_p95_ub_ms=math.nan)
    )
    reg = Registry(settings=store)
    (c,) = reg.candidates(ds)
    assert "latency_p95_ms" not in c.metrics
    with pytest.raises(NoFeasibleModelError, match="not measured"):
        reg.get_best(Constraints(dataset=ds, max_latency_ms=100))


def test_failed_runs_are_recorded_but_never_candidates(store: Settings, onnx_model, ds: str) -> None:
    run_id = log_failure(store, ds, "broken", "cpu", "export", "boom", "k5", "sweep-1")
    import mlflow

    run = mlflow.MlflowClient(store.resolved_tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["cnnselect.error"] == "boom"
    assert Registry(settings=store).candidates(ds) == []
    assert find_finished(store, ds, "k5") is None
    log_evaluation(store, _evaluation(onnx_model, ds, "fine", "k6"))
    assert find_finished(store, ds, "k6") is not None


def test_registry_pickles_without_its_client(store: Settings, onnx_model, ds: str) -> None:
    log_evaluation(store, _evaluation(onnx_model, ds, "p", "k7"))
    reg = Registry(settings=store)
    reg.candidates(ds)
    clone = pickle.loads(pickle.dumps(reg))
    assert clone._client is None and clone.get_best(Constraints(dataset=ds)).candidate.variant == "p"
