"""The evaluation record: one MLflow run per evaluated (model, runner), its ONNX artifact registered as a version.

Here: what an evaluation is (:class:`Evaluation`), the shared client, and the lookups by idempotency key
(``cnnselect.key``) that make its logging safe to retry.

The writes themselves are :mod:`registry.writes` (:func:`registry.writes.log_evaluation` and the rest): the one
module that calls MLflow's write methods.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from registry import names
from registry.errors import InvalidNameError
from registry.retry import search_runs, with_retries
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


def _search_dataset(settings: Settings, dataset: str, filter_string: str) -> list[Any]:
    """The dataset's runs matching the filter; none while its experiment does not exist (a read creates nothing)."""
    client = _client(settings)
    exp = client.get_experiment_by_name(names.experiment_name(dataset))
    return [] if exp is None else search_runs(client, exp.experiment_id, filter_string)


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
        return _search_dataset(settings, dataset, " and ".join(clauses))

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
        return _search_dataset(settings, dataset, f"tags.`{names.TAG_KEY}` = '{key}'")

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


def _pip_requirements() -> list[str]:
    """What ``infer_pip_requirements`` finds for an ONNX model, without its seconds-long subprocess per model.

    numpy, onnx and onnxruntime pinned to the installed versions; MLflow adds itself.
    """
    import mlflow.onnx

    return [f"numpy=={np.__version__}", *mlflow.onnx.get_default_pip_requirements()]


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


def sweep_runs(settings: Settings, dataset: str, sweep: str) -> list[dict[str, Any]]:
    """Every run of one sweep, flattened (for summaries)."""
    filter_literal("sweep id", sweep)

    def search() -> list[Any]:
        return _search_dataset(settings, dataset, f"tags.`{names.TAG_SWEEP}` = '{sweep}'")

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
