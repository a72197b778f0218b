"""The write side: one MLflow run per evaluated (model, runner), its ONNX artifact registered as a version.

Every write is a transaction keyed on an idempotency key (``cnnselect.key``), safe to retry in this process (store
down, SQLite busy) and in a new one (an Airflow worker killed mid-task): see :func:`log_evaluation`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from registry import names
from registry.errors import InvalidNameError
from registry.retry import STATUS_RUNNING, Attempts, search_runs, settle_key, with_retries
from registry.settings import Settings

log = logging.getLogger(__name__)

TAG_GATE = "cnnselect.gate"  # on a gate run: the suite's name
TAG_GATE_STATUS = "cnnselect.gate_status"  # passed | failed
TAG_REPLACED = "cnnselect.replaced"  # on a run: the half-written runs of its key that it replaced (deleted)


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
    artifacts: dict[str, Path] = field(default_factory=dict)  # extra files or folders, logged under artifact_path key
    preprocess: dict[str, Any] = field(default_factory=dict)  # timm's eval data config the artifact was measured with
    host: str = ""  # hardware-only id of the measuring machine (evaluators.runners.runner_host_id); "" for unknown


@dataclass(frozen=True)
class Logged:
    run_id: str
    model_uri: str
    version: str | None


_CLIENTS: dict[tuple[str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(settings: Settings) -> Any:
    """One ``MlflowClient`` per (tracking URI, registry URI) for the process, shared by its threads.

    The fluent calls (``start_run``, ``log_model``) read MLflow's global URI, so it is set to the settings' on every
    call (a no-op when unchanged); threads writing to different stores at once would race on it, as before.
    """
    import mlflow

    # MLflow's own HTTP retries stay short so that our bounded retry (below) decides, and cleans up partial runs.
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(var, value)
    uri = settings.resolved_tracking_uri
    with _CLIENTS_LOCK:
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        # MLflow also exports the URI as MLFLOW_TRACKING_URI; put the environment back, or every later Settings() of
        # this process (and its subprocesses) would resolve to this store instead of its own
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
        key = (uri, mlflow.get_registry_uri())
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = mlflow.MlflowClient(tracking_uri=key[0], registry_uri=key[1])
    return client


def filter_literal(kind: str, value: str) -> str:
    """A value safe inside a quoted MLflow filter string (no quotes, backslashes, backticks or control characters)."""
    if not isinstance(value, str) or not value or any(c in value for c in "'\"\\`") or not value.isprintable():
        raise InvalidNameError(
            f"invalid {kind} {value!r} for an MLflow filter: no quotes, backslashes, backticks or control characters"
        )
    return value


def get_or_create_experiment(
    client: Any, name: str, artifact_location: str | None, tags: dict[str, str] | None = None
) -> str:
    """The id of experiment ``name``, created with ``artifact_location`` and ``tags`` when it does not exist yet.

    Two processes may create it at once: the one whose create fails reads the id the other one created.
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location, tags=tags))
    except MlflowException:  # created concurrently by another task: it exists now, or the create failed for real
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def ensure_experiment(settings: Settings, dataset: str) -> str:
    """The dataset's experiment id, created on first use (artifacts where ``Settings.artifact_location`` says)."""
    return get_or_create_experiment(
        _client(settings),
        names.experiment_name(dataset),
        settings.artifact_location(dataset),
        {names.TAG_DATASET: dataset},
    )


def find_finished_many(
    settings: Settings, dataset: str, keys: list[str], *, variant: str | None = None
) -> dict[str, str]:
    """Key -> run id of its successful evaluation, for those of ``keys`` that have one: one (paged) ``search_runs``.

    MLflow's run filters compare tags with ``=``, ``!=`` and ``LIKE`` only (no ``IN``, no ``OR``), so the search is
    narrowed by what the keys share and matched here: the key itself when there is one, the ``variant`` when given
    (the keys of one variant's runners), else every ``ok`` run of the dataset, which grows with it: pass ``variant``.
    The newest ``ok`` run of a key wins.
    """
    wanted = {filter_literal("idempotency key", k) for k in keys}
    if not wanted:
        return {}
    clauses = [f"tags.`{names.TAG_STATUS}` = '{names.STATUS_OK}'"]
    if len(wanted) == 1:
        clauses.append(f"tags.`{names.TAG_KEY}` = '{next(iter(wanted))}'")
    elif variant is not None:
        clauses.append(f"tags.`{names.TAG_VARIANT}` = '{filter_literal('variant', variant)}'")

    def search() -> list[Any]:
        client = _client(settings)
        return search_runs(client, ensure_experiment(settings, dataset), " and ".join(clauses))

    what = f"look up {next(iter(wanted))}" if len(wanted) == 1 else f"look up {len(wanted)} keys"
    found: dict[str, str] = {}
    for run in with_retries(search, what, settings):
        key = run.data.tags.get(names.TAG_KEY)
        if key in wanted:
            found.setdefault(key, run.info.run_id)
    return found


def find_finished(settings: Settings, dataset: str, key: str) -> str | None:
    """The run id of a successful evaluation with this idempotency key, if one exists."""
    return find_finished_many(settings, dataset, [key]).get(key)


def find_gate_run(settings: Settings, dataset: str, key: str, passed: bool | None = None) -> str | None:
    """The newest complete gate run with this key (and verdict, when ``passed`` is given), if one exists."""
    filter_literal("gate key", key)

    def search() -> list[Any]:
        client = _client(settings)
        return search_runs(client, ensure_experiment(settings, dataset), f"tags.`{names.TAG_KEY}` = '{key}'")

    verdicts = {"passed", "failed"} if passed is None else {"passed" if passed else "failed"}
    for run in with_retries(search, f"look up gate {key}", settings):
        done = run.info.status == ("FAILED" if run.data.tags.get(TAG_GATE_STATUS) == "failed" else "FINISHED")
        if TAG_GATE in run.data.tags and run.data.tags.get(TAG_GATE_STATUS) in verdicts and done:
            return str(run.info.run_id)
    return None


def _clean_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """MLflow would store NaN as 0 on some stores: non-finite metrics are left out and named instead."""
    ok = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    return ok, sorted(set(metrics) - set(ok))


def log_evaluation(settings: Settings, ev: Evaluation) -> Logged:
    """Log one evaluation as a run and a registered version, once per idempotency key, whatever kills an attempt.

    Write order: the run is created with its tags and ``status=running``; params and metrics (one batch), inputs,
    artifacts and the model follow; the version is registered with all its tags, its card included, in one call (it
    is a candidate from then on: everything it points at is written); the run is ended; ``status=ok`` on the run is
    the last write. So ``ok`` means complete, and a run of the key in any other state (but ``failed``) is an attempt
    that died.

    Cleanup: every attempt starts with :func:`registry.retry.settle_key`: the key's ``ok`` run is returned if there
    is one (a retry of a task killed after its last write logs nothing new), and what killed attempts left (runs,
    versions, logged models) is deleted and named on the new run in ``cnnselect.replaced``. So a process killed at
    any point (SIGKILL, OOM, a lost Airflow worker) is cleaned up by the retry. An attempt that raises deletes its
    own run at once (by run id), unless the store is unreachable; then the next attempt does.

    Race accepted: two live attempts of one key (a worker Airflow took for dead, still running, and its retry). The
    later one deletes the earlier one's unfinished run, whose next write then fails; it deletes what it wrote and
    raises. Only when both pass their first search before either creates its run do both end ``ok``: two runs of
    the same measurement, both candidates, equal but for noise.
    """
    filter_literal("idempotency key", ev.key)
    writes = Attempts()

    def attempt() -> Logged:
        try:
            return _log_evaluation_once(settings, ev, writes)
        except BaseException as exc:
            writes.discard_after(lambda: _client(settings), exc)
            raise

    return with_retries(attempt, f"log {ev.variant}/{ev.runner}", settings)


def _pip_requirements() -> list[str]:
    """What ``infer_pip_requirements`` finds for an ONNX model, without its seconds-long subprocess per model.

    numpy, onnx and onnxruntime pinned to the installed versions; MLflow adds itself.
    """
    import mlflow.onnx

    return [f"numpy=={np.__version__}", *mlflow.onnx.get_default_pip_requirements()]


def _log_evaluation_once(settings: Settings, ev: Evaluation, writes: Attempts) -> Logged:
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature

    client = _client(settings)
    writes.exp_id = exp_id = ensure_experiment(settings, ev.dataset.name)
    writes.discard(client)
    model_name = names.registered_model_name(ev.dataset.name)
    done, version = settle_key(client, exp_id, model_name, ev.key, writes.replaced)
    if done is not None:
        return Logged(done, f"models:/{model_name}/{version}", version)
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
        names.TAG_THREADS: names.threads_setting(str(ev.fingerprint.get("threads", "all"))),
    }
    if ev.host:
        tags[names.TAG_HOST] = ev.host
    if ev.preprocess:  # what production code applies before calling the artifact (Answer.preprocess)
        tags[names.TAG_PREPROCESS] = json.dumps(ev.preprocess, sort_keys=True, separators=(",", ":"))
    run_tags = {**tags, names.TAG_STATUS: STATUS_RUNNING}
    if non_finite:
        run_tags["cnnselect.non_finite_metrics"] = ",".join(non_finite)
    if writes.replaced:
        run_tags[TAG_REPLACED] = ",".join(writes.replaced)[:5000]
    run_name = names.run_name(ev.variant, ev.runner, ev.precision)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=run_tags) as run:
        run_id = run.info.run_id
        writes.started.append(run_id)
        client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in ev.params.items()])
        mlflow.log_dict(ev.fingerprint, "fingerprint.json")
        with warnings.catch_warnings():  # MLflow registers two local-path source classes and warns that it picks one
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(ev.dataset.root)
        dataset = MetaDataset(  # type: ignore[abstract]  # one digest, one meaning: the cnnselect.dataset_digest tag's
            source=source, name=ev.dataset.name, digest=ev.dataset.digest[:32]
        )
        input_tags = {"classes": str(len(ev.dataset.classes)), "heldout_digest": ev.dataset.heldout_digest}
        mlflow.log_input(dataset, context="heldout", tags=input_tags)
        for path, local in ev.artifacts.items():
            if Path(local).is_dir():
                mlflow.log_artifacts(str(local), artifact_path=path)
            else:
                mlflow.log_artifact(str(local), artifact_path=path)
        info = mlflow.onnx.log_model(
            onnx.load(str(ev.artifact)),
            name="model",
            signature=infer_signature(ev.input_example, ev.output_example),
            input_example=ev.input_example,
            save_as_external_data=True,
            onnx_execution_providers=["CPUExecutionProvider"],
            pip_requirements=_pip_requirements(),
            tags=tags,
        )
        # metrics after the model, linked to it in the same batch (logged before it, MLflow would copy each metric's
        # history onto the model: one query per metric)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, v, now, 0, run_id=run_id, model_id=info.model_id) for k, v in metrics.items()]
        )
        # the version's few tags (names.VERSION_TAGS), its figures on the card: the metrics are the run's and the
        # LoggedModel's, where MLflow's UI shows and plots them
        logged = {**tags, names.TAG_STATUS: names.STATUS_OK, names.TAG_RUN_ID: run_id}
        version_tags = names.version_tags(logged, metrics)
        if names.TAG_CARD not in version_tags:
            log.warning(
                "%s: its runner, precision, batch size, threads, fingerprint or family does not fit the card (one word "
                "each, no '/' in the first three); the version is registered but is no candidate",
                run_name,
            )
        mv = mlflow.register_model(info.model_uri, model_name, tags=version_tags)  # the version with all its tags
        client.update_model_version(model_name, mv.version, description=version_description(ev, run_id))
    client.set_tag(run_id, names.TAG_STATUS, names.STATUS_OK)  # the last write: ``ok`` means complete
    writes.started.remove(run_id)
    return Logged(run_id, f"models:/{model_name}/{mv.version}", str(mv.version))


def version_description(ev: Evaluation, run_id: str) -> str:
    """The Markdown a person reads on the version's page in the MLflow UI: what it is and its headline figures."""
    m = ev.metrics

    def fig(name: str, fmt: str, unit: str = "") -> str:
        v = m.get(name)
        return f"{v:{fmt}}{unit}" if isinstance(v, float) and math.isfinite(v) else "n/a"

    interval = f"{fig('top1_ci_low', '.3f')} to {fig('top1_ci_high', '.3f')}"
    p95, size = fig("latency_p95_ms", ".2f", " ms"), fig("size_mb", ".1f", " MB")
    return (
        f"**{ev.variant}** on `{ev.runner}` ({ev.precision}), dataset `{ev.dataset.name}` "
        f"({ev.dataset.heldout_count} held-out images)\n\n"
        "| top-1 | 95% interval | p95 latency (batch 1) | size |\n|---|---|---|---|\n"
        f"| {fig('top1', '.3f')} | {interval} | {p95} | {size} |"
        f"\n\nMeasured at {ev.params.get('image_size', '?')} px with {ev.weights_source} weights; run `{run_id}`."
    )


def _record_run(
    settings: Settings,
    dataset: str,
    what: str,
    run_name: str,
    tags: dict[str, str],
    write: Callable[[], None],
    *,
    failed: bool,
) -> str:
    """One run with ``tags`` and what ``write`` logs into it, ended FAILED when ``failed``: whole or not at all.

    Retried as a whole; an attempt that raises deletes its run, or the next attempt does (as in log_evaluation).
    """
    import mlflow

    writes = Attempts()

    def once() -> str:
        client = _client(settings)
        writes.exp_id = ensure_experiment(settings, dataset)
        writes.discard(client)
        try:
            with mlflow.start_run(experiment_id=writes.exp_id, run_name=run_name, tags=tags) as run:
                writes.started.append(run.info.run_id)
                write()
            if failed:
                client.set_terminated(run.info.run_id, status="FAILED")
        except BaseException as exc:
            writes.discard_after(lambda: _client(settings), exc)
            raise
        writes.started.clear()
        return str(run.info.run_id)

    return with_retries(once, what, settings)


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

    def write() -> None:
        mlflow.log_text(error, "error.txt")
        for name, obj in (artifacts or {}).items():
            mlflow.log_dict(obj, name)

    what = f"record failure of {variant}/{runner}"
    return _record_run(settings, dataset, what, f"{variant}/{runner}/failed", tags, write, failed=True)


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

    def write() -> None:
        mlflow.log_dict(result, f"gates/{suite}.json")

    return _record_run(settings, dataset, f"record gate {suite}", f"gate/{suite}", tags, write, failed=not passed)


def sweep_runs(settings: Settings, dataset: str, sweep: str) -> list[dict[str, Any]]:
    """Every run of one sweep, flattened (for summaries)."""
    filter_literal("sweep id", sweep)

    def search() -> list[Any]:
        client = _client(settings)
        return search_runs(client, ensure_experiment(settings, dataset), f"tags.`{names.TAG_SWEEP}` = '{sweep}'")

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
