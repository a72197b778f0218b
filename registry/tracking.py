"""The write side: one MLflow run per evaluated (model, runner), its ONNX artifact registered as a version."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from registry import names
from registry.errors import InvalidNameError
from registry.retry import with_retries
from registry.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DatasetRef:
    name: str
    digest: str
    root: str
    classes: tuple[str, ...]
    heldout_digest: str
    heldout_count: int


@dataclass
class Evaluation:
    """Everything measured about one model on one runner, ready to log."""

    variant: str
    family: str
    runner: str
    precision: str
    dataset: DatasetRef
    key: str
    sweep: str
    fingerprint: dict[str, str]
    fingerprint_id: str
    weights_digest: str
    weights_source: str
    artifact: Path  # the deployable .onnx (external data beside it)
    input_example: np.ndarray
    output_example: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # extra files, logged under artifact_path key


@dataclass(frozen=True)
class Logged:
    run_id: str
    model_uri: str
    version: str | None


def _client(settings: Settings) -> Any:
    import mlflow

    # MLflow's own HTTP retries stay short so that our bounded retry (below) decides, and cleans up partial runs.
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(var, value)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    return mlflow.MlflowClient(settings.resolved_tracking_uri)


TAG_GATE = "cnnselect.gate"  # on a gate run: the suite's name
TAG_GATE_STATUS = "cnnselect.gate_status"  # passed | failed
STATUS_ABORTED = "aborted"  # a run (and its version) left half-written by an interrupted attempt


def filter_literal(kind: str, value: str) -> str:
    """A value safe inside a quoted MLflow filter string (no quotes, backslashes, backticks or control characters)."""
    if not isinstance(value, str) or not value or any(c in value for c in "'\"\\`") or not value.isprintable():
        raise InvalidNameError(
            f"invalid {kind} {value!r} for an MLflow filter: no quotes, backslashes, backticks or control characters"
        )
    return value


def _abort_partial(settings: Settings, started: list[str], keep: str | None = None) -> None:
    """Mark runs left half-written by a failed attempt as aborted (never ``ok``): nothing reads them as results."""
    import mlflow

    while mlflow.active_run() is not None:  # a fluent run left open by an interrupted attempt
        try:
            mlflow.end_run("FAILED")
        except Exception:
            break
    client = _client(settings)
    for run_id in list(started):
        if run_id == keep:
            continue
        client.set_tag(run_id, names.TAG_STATUS, STATUS_ABORTED)
        client.set_terminated(run_id, status="FAILED")
        for mv in client.search_model_versions(f"run_id = '{filter_literal('run id', run_id)}'"):
            client.set_model_version_tag(mv.name, mv.version, names.TAG_STATUS, STATUS_ABORTED)
        started.remove(run_id)


def ensure_experiment(settings: Settings, dataset: str) -> str:
    """The dataset's experiment id, created on first use (artifacts under CNNSELECT_HOME for a local store)."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    name = names.experiment_name(dataset)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if settings.is_local_store:
        location = (settings.artifact_root / dataset).resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location, tags={names.TAG_DATASET: dataset}))
    except MlflowException:  # created concurrently by another task
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def find_finished(settings: Settings, dataset: str, key: str) -> str | None:
    """The run id of a successful evaluation with this idempotency key, if one exists."""
    filter_literal("idempotency key", key)

    def find() -> str | None:
        client = _client(settings)
        exp_id = ensure_experiment(settings, dataset)
        runs = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{names.TAG_KEY}` = '{key}' and tags.`{names.TAG_STATUS}` = '{names.STATUS_OK}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    return with_retries(find, f"look up {key}", settings)


def _clean_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """MLflow would store NaN as 0 on some stores: non-finite metrics are left out and named instead."""
    ok = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    return ok, sorted(set(metrics) - set(ok))


def log_evaluation(settings: Settings, ev: Evaluation) -> Logged:
    """Log one evaluation as a run and a registered version; retried as a whole, a partial attempt is aborted."""
    started: list[str] = []
    return with_retries(
        lambda: _log_evaluation_once(settings, ev, started),
        f"log {ev.variant}/{ev.runner}",
        settings,
        on_retry=lambda: _abort_partial(settings, started),
    )


def _log_evaluation_once(settings: Settings, ev: Evaluation, started: list[str]) -> Logged:
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    client = _client(settings)
    exp_id = ensure_experiment(settings, ev.dataset.name)
    model_name = names.registered_model_name(ev.dataset.name)
    metrics, non_finite = _clean_metrics(ev.metrics)
    tags = {
        names.TAG_VARIANT: ev.variant,
        names.TAG_FAMILY: ev.family,
        names.TAG_RUNNER: ev.runner,
        names.TAG_PRECISION: ev.precision,
        names.TAG_DATASET: ev.dataset.name,
        names.TAG_DATASET_DIGEST: ev.dataset.digest,
        names.TAG_WEIGHTS_DIGEST: ev.weights_digest,
        names.TAG_WEIGHTS_SOURCE: ev.weights_source,
        names.TAG_FINGERPRINT: ev.fingerprint_id,
        names.TAG_KEY: ev.key,
        names.TAG_SWEEP: ev.sweep,
        names.TAG_EVALUATOR_VERSION: names.EVALUATOR_VERSION,
        names.TAG_BATCH_SIZE: str(ev.fingerprint.get("batch_size", "1")),  # operating point, read by get_best
        names.TAG_THREADS: str(ev.fingerprint.get("threads", "all")),
    }
    with mlflow.start_run(
        experiment_id=exp_id, run_name=names.run_name(ev.variant, ev.runner, ev.precision), tags=tags
    ) as run:
        started.append(run.info.run_id)
        mlflow.log_params({k: str(v)[:500] for k, v in ev.params.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(ev.fingerprint, "fingerprint.json")
        if non_finite:
            mlflow.set_tag("cnnselect.non_finite_metrics", ",".join(non_finite))
        with warnings.catch_warnings():  # MLflow registers two local-path source classes and warns that it picks one
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(ev.dataset.root)
        dataset = MetaDataset(  # type: ignore[abstract]
            source=source, name=ev.dataset.name, digest=ev.dataset.heldout_digest[:32]
        )
        mlflow.log_input(dataset, context="heldout", tags={"classes": str(len(ev.dataset.classes))})
        for path, local in ev.artifacts.items():
            mlflow.log_artifact(str(local), artifact_path=path)
        signature = infer_signature(ev.input_example, ev.output_example)
        info = mlflow.onnx.log_model(
            onnx.load(str(ev.artifact)),
            name="model",
            registered_model_name=model_name,
            signature=signature,
            input_example=ev.input_example,
            save_as_external_data=True,
            onnx_execution_providers=["CPUExecutionProvider"],
            tags=tags,
        )
        version = str(info.registered_model_version) if info.registered_model_version is not None else None
        mlflow.set_tag(names.TAG_STATUS, names.STATUS_OK)
    if version is not None:
        for k, v in {**tags, names.TAG_STATUS: names.STATUS_OK}.items():
            client.set_model_version_tag(model_name, version, k, v)
        for metric, value in metrics.items():
            client.set_model_version_tag(model_name, version, names.metric_tag(metric), repr(value))
        client.set_model_version_tag(model_name, version, "cnnselect.run_id", run.info.run_id)
    return Logged(run.info.run_id, f"models:/{model_name}/{version}", version)


def log_failure(
    settings: Settings,
    dataset: str,
    variant: str,
    runner: str,
    stage: str,
    error: str,
    key: str,
    sweep: str,
    artifacts: dict[str, Any] | None = None,
) -> str:
    """Record a failed evaluation as a FAILED run with the reason, so it shows in the MLflow UI beside the rest.

    ``artifacts`` (file name -> JSON-able object) are logged with it, e.g. a gate's validation result.
    """
    import mlflow

    tags = {
        names.TAG_VARIANT: variant,
        names.TAG_RUNNER: runner,
        names.TAG_DATASET: dataset,
        names.TAG_KEY: key,
        names.TAG_SWEEP: sweep,
        names.TAG_STATUS: names.STATUS_FAILED,
        names.TAG_STAGE: stage,
        names.TAG_ERROR: error[:4000],
        names.TAG_EVALUATOR_VERSION: names.EVALUATOR_VERSION,
    }
    started: list[str] = []

    def once() -> str:
        exp_id = ensure_experiment(settings, dataset)
        _client(settings)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{variant}/{runner}/failed", tags=tags) as run:
            started.append(run.info.run_id)
            mlflow.log_text(error, "error.txt")
            for name, obj in (artifacts or {}).items():
                mlflow.log_dict(obj, name)
        mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
        return str(run.info.run_id)

    return with_retries(
        once, f"record failure of {variant}/{runner}", settings, on_retry=lambda: _abort_partial(settings, started)
    )


def log_gate(settings: Settings, dataset: str, suite: str, result: dict[str, Any], passed: bool, key: str) -> str:
    """Record one gate run (passed or failed) with its GX validation result as ``gates/<suite>.json``."""
    import mlflow

    tags = {
        names.TAG_DATASET: dataset,
        names.TAG_KEY: key,
        TAG_GATE: suite,
        TAG_GATE_STATUS: "passed" if passed else "failed",
        names.TAG_EVALUATOR_VERSION: names.EVALUATOR_VERSION,
    }
    started: list[str] = []

    def once() -> str:
        exp_id = ensure_experiment(settings, dataset)
        _client(settings)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"gate/{suite}", tags=tags) as run:
            started.append(run.info.run_id)
            mlflow.log_dict(result, f"gates/{suite}.json")
        if not passed:
            mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
        return str(run.info.run_id)

    return with_retries(once, f"record gate {suite}", settings, on_retry=lambda: _abort_partial(settings, started))


def sweep_runs(settings: Settings, dataset: str, sweep: str) -> list[dict[str, Any]]:
    """Every run of one sweep, flattened (for summaries)."""
    filter_literal("sweep id", sweep)

    def search() -> list[Any]:
        client = _client(settings)
        exp_id = ensure_experiment(settings, dataset)
        return list(
            client.search_runs([exp_id], filter_string=f"tags.`{names.TAG_SWEEP}` = '{sweep}'", max_results=5000)
        )

    runs = with_retries(search, f"read sweep {sweep}", settings)
    return [
        {
            "run_id": r.info.run_id,
            "status": r.data.tags.get(names.TAG_STATUS),
            "tags": r.data.tags,
            "metrics": r.data.metrics,
        }
        for r in runs
    ]


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
