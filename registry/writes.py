"""Every MLflow write cnnselect makes, each retried on transient store errors and idempotent where retried.

Nothing else in ``catalog``, ``evaluators``, ``registry``, ``cnnselect`` or ``dags`` calls an MLflow write method
(``tests/registry/test_writes.py`` parses the source and fails on one). Calls are retried by
:func:`registry.retry.with_retries` (bounded, typed errors); what makes a retry safe:

- a value written again is the same (tags, aliases, a deleted tag deleted again);
- a run is found by its key before it is created (:func:`keyed_run`; evaluations: :func:`settle_key`), so a retry
  after a lost response returns the complete run or deletes the half-written one and writes it again, never a twin;
- an attempt that raises deletes what it wrote (:class:`Attempts`), or the next attempt does.

``client`` below is an ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import names
from registry.retry import search_runs, transient, with_retries
from registry.settings import Settings
from registry.tracking import (
    TAG_GATE,
    TAG_GATE_STATUS,
    TAG_REPLACED,
    Evaluation,
    Logged,
    _clean_metrics,
    _client,
    _pip_requirements,
    filter_literal,
    version_description,
)

log = logging.getLogger(__name__)

STATUS_RUNNING = "running"  # a run's status while its attempt writes; the attempt's last write makes it ``ok``
_HISTORY = (names.STATUS_OK, names.STATUS_FAILED)  # complete runs: a result, or a failure record


# -- experiments ------------------------------------------------------------------------------------------------


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


def experiment(
    settings: Settings, client: Any, name: str, artifact_location: str | None, tags: dict[str, str] | None = None
) -> str:
    """:func:`get_or_create_experiment`, retried."""
    return str(
        with_retries(
            lambda: get_or_create_experiment(client, name, artifact_location, tags),
            f"get or create experiment {name}",
            settings,
        )
    )


# -- what an interrupted attempt leaves behind -----------------------------------------------------------------


def delete_all(client: Any, runs: list[str], versions: list[Any], models: list[str]) -> None:
    """Delete runs (ended FAILED first), model versions and logged models; what is gone already is skipped.

    Runs go first: every later write of an attempt still alive then fails (``create_model_version`` aside).
    """
    for fn, args in [
        *((client.set_terminated, (r, "FAILED")) for r in runs),
        *((client.delete_run, (r,)) for r in runs),
        *((client.delete_model_version, (mv.name, str(mv.version))) for mv in versions),
        *((client.delete_logged_model, (m,)) for m in models),
    ]:
        try:
            fn(*args)
        except Exception as exc:
            if transient(exc):
                raise
            log.debug("cleanup: %s%s skipped: %s", fn.__name__, args, exc)  # deleted already, or by another cleaner


@dataclass
class Attempts:
    """What one call wrote across its attempts: the runs not complete yet, and the runs its cleanups deleted."""

    exp_id: str = ""
    started: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def discard(self, client: Any) -> None:
        """Delete the started runs (an attempt of this call died in them), with their versions and logged models."""
        for run_id in list(self.started):
            versions = list(client.search_model_versions(f"run_id = '{run_id}'"))
            found = client.search_logged_models([self.exp_id], filter_string=f"source_run_id = '{run_id}'")
            delete_all(client, [run_id], versions, [m.model_id for m in found])
            self.started.remove(run_id)
            self.replaced.append(run_id)
            log.warning("deleted half-written run %s (versions %s)", run_id, [mv.version for mv in versions] or "none")

    def discard_after(self, client: Callable[[], Any], exc: BaseException) -> None:
        """After an attempt raised: delete what it wrote, unless the store is unreachable (the next attempt will)."""
        if not self.started or (isinstance(exc, Exception) and transient(exc)):
            return
        try:
            self.discard(client())
        except Exception as cleanup_exc:
            log.warning("could not delete half-written runs %s: %s", self.started, cleanup_exc)


def settle_key(
    client: Any, exp_id: str, model_name: str, key: str, replaced: list[str]
) -> tuple[str | None, str | None]:
    """Before an attempt: the key's newest ``ok`` run and its version, if any; and what killed attempts left, deleted.

    Left behind: the key's runs whose status is neither ``ok`` nor ``failed`` (``running``; ``aborted`` or none from
    earlier versions), and its model versions and logged models that are not its ``ok`` run's. Failed runs
    (``log_failure``) and gate runs are history and stay. Deleted runs join ``replaced``.
    """
    by_key = f"tags.`{names.TAG_KEY}` = '{key}'"
    runs = search_runs(client, exp_id, by_key)
    ok = next((r.info.run_id for r in runs if r.data.tags.get(names.TAG_STATUS) == names.STATUS_OK), None)
    stale = [  # evaluation runs carry the variant; gate runs (a key, no status) do not
        r.info.run_id
        for r in runs
        if r.data.tags.get(names.TAG_STATUS) not in _HISTORY and names.TAG_VARIANT in r.data.tags
    ]
    versions = client.search_model_versions(f"name = '{model_name}' and {by_key}")
    kept = [mv for mv in versions if ok is not None and mv.run_id == ok]
    stray = [mv for mv in versions if ok is None or mv.run_id != ok]
    models = [m.model_id for m in client.search_logged_models([exp_id], filter_string=by_key) if m.source_run_id != ok]
    if stale or stray or models:
        log.warning(
            "key %s: deleting what a killed attempt left: runs %s, %s versions %s, logged models %s",
            key, stale, model_name, [mv.version for mv in stray], models,
        )  # fmt: skip
        delete_all(client, stale, stray, models)
        replaced += stale
    version = str(kept[0].version) if kept else None
    if ok is not None:
        log.info("key %s: logged before as run %s (version %s); nothing to write", key, ok, version)
    return ok, version


# -- evaluations ------------------------------------------------------------------------------------------------


def log_evaluation(settings: Settings, ev: Evaluation) -> Logged:
    """Log one evaluation as a run and a registered version, once per idempotency key, whatever kills an attempt.

    Write order: the run is created with its tags and ``status=running``; params and metrics (one batch), inputs,
    artifacts and the model follow; the version is registered with all its tags, its card included, in one call (it
    is a candidate from then on: everything it points at is written); the run is ended; ``status=ok`` on the run is
    the last write. So ``ok`` means complete, and a run of the key in any other state (but ``failed``) is an attempt
    that died.

    Cleanup: every attempt starts with :func:`settle_key`: the key's ``ok`` run is returned if there
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
            # the signature, not an example: MLflow keeps an example tensor as JSON twice and round-trips it through a
            # pyfunc load to check it (bench.log_cost: 8 MB and 0.6 s a version at 224 px, 55 MB and 4.6 s at 600 px)
            signature=infer_signature(ev.input_example, ev.output_example),
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


# -- runs found by their key before they are created ------------------------------------------------------------


def keyed_run(
    settings: Settings,
    client: Any,
    exp_id: str,
    key: tuple[str, str],
    run_name: str,
    tags: dict[str, str],
    write: Callable[[str], None],
    *,
    status: str = "FINISHED",
    what: str,
) -> str:
    """The one complete run tagged ``key`` (tag, value) in the experiment: found, or created and written once.

    ``write(run_id)`` logs into the run; ending it with ``status`` is the last write, so a run of the key in another
    state is an attempt that died. A retry after a lost response (the create included) finds what its attempt
    wrote: complete, it is returned; not, it is deleted and written again. A live attempt racing another call with
    the same key is the race :func:`log_evaluation` accepts.
    """
    from mlflow.tracking.context.registry import resolve_tags

    tag, value = key
    filter_literal("run key", value)

    def once() -> str:
        runs = search_runs(client, exp_id, f"tags.`{tag}` = '{value}'")
        done = next((r.info.run_id for r in runs if r.info.status == status), None)
        if done is not None:
            return str(done)
        if runs:
            log.warning("%s: deleting the half-written runs %s", what, [r.info.run_id for r in runs])
            delete_all(client, [r.info.run_id for r in runs], [], [])
        # the context tags (source, user, git commit) that ``mlflow.start_run`` adds
        run_tags = resolve_tags({**tags, tag: value})
        run_id = str(client.create_run(exp_id, run_name=run_name, tags=run_tags).info.run_id)
        try:
            write(run_id)
            client.set_terminated(run_id, status)
        except Exception as exc:
            if not transient(exc):  # a real error: delete the run now (unreachable: the next call's search does)
                with contextlib.suppress(Exception):
                    delete_all(client, [run_id], [], [])
            raise
        return run_id

    return str(with_retries(once, what, settings))


def _write_id() -> tuple[str, str]:
    """A key for one call's run, the same across its retries: what lets a retry find the run a lost response made."""
    return names.TAG_WRITE, uuid.uuid4().hex


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
    client = _client(settings)
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

    def write(run_id: str) -> None:
        client.log_text(run_id, error, "error.txt")
        for name, obj in (artifacts or {}).items():
            client.log_dict(run_id, obj, name)

    exp_id = str(with_retries(lambda: ensure_experiment(settings, dataset), f"experiment {dataset}", settings))
    what = f"record failure of {variant}/{runner}"
    return keyed_run(
        settings, client, exp_id, _write_id(), f"{variant}/{runner}/failed", tags, write, status="FAILED", what=what
    )


def log_gate(settings: Settings, dataset: str, suite: str, result: dict[str, Any], passed: bool, key: str) -> str:
    """Record one gate run (passed or failed) with its GX validation result as ``gates/<suite>.json``."""
    client = _client(settings)
    tags = {
        names.TAG_DATASET: dataset,
        names.TAG_KEY: key,
        TAG_GATE: suite,
        TAG_GATE_STATUS: "passed" if passed else "failed",
        names.TAG_EVALUATOR_VERSION: names.EVALUATOR_VERSION,
    }
    exp_id = str(with_retries(lambda: ensure_experiment(settings, dataset), f"experiment {dataset}", settings))
    return keyed_run(
        settings, client, exp_id, _write_id(), f"gate/{suite}", tags,
        lambda run_id: client.log_dict(run_id, result, f"gates/{suite}.json"),
        status="FINISHED" if passed else "FAILED", what=f"record gate {suite}",
    )  # fmt: skip


# -- tags and aliases: a value written twice is the same --------------------------------------------------------


def set_alias(settings: Settings, client: Any, model: str, alias: str, version: str) -> None:
    """Point ``alias`` of the registered model at ``version``."""
    with_retries(
        lambda: client.set_registered_model_alias(model, alias, version),
        f"move {model}@{alias} to v{version}",
        settings,
    )


def set_version_tags(settings: Settings, client: Any, model: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a model version, one call each."""
    for key, value in tags.items():
        write = functools.partial(client.set_model_version_tag, model, version, key, value)
        with_retries(write, f"tag {model} v{version} {key}", settings)


def delete_version_tag(settings: Settings, client: Any, model: str, version: str, key: str) -> None:
    """Delete a tag of a model version; one already gone is no error (MLflow's stores skip it)."""
    with_retries(
        lambda: client.delete_model_version_tag(model, version, key), f"untag {model} v{version} {key}", settings
    )


def set_model_tag(settings: Settings, client: Any, model: str, key: str, value: str) -> None:
    """Set a tag on a registered model."""
    write = functools.partial(client.set_registered_model_tag, model, key, value)
    with_retries(write, f"tag {model} {key}", settings)


def set_run_tags(settings: Settings, client: Any, tags: dict[str, dict[str, str]]) -> None:
    """Set tags on runs (run id -> key -> value), one call each."""
    for run_id, these in tags.items():
        for key, value in these.items():
            with_retries(functools.partial(client.set_tag, run_id, key, value), f"tag run {run_id} {key}", settings)


# -- promotions and reports -------------------------------------------------------------------------------------


def record_promotion(
    settings: Settings,
    client: Any,
    tags: dict[str, str],
    run_name: str,
    metrics: dict[str, float],
    evidence: dict[str, Any],
) -> str:
    """One finished run in the promotions experiment: ``winner_<m>`` metrics and ``evidence.json``; its id."""
    location = settings.artifact_location("promotions")
    exp_id = experiment(settings, client, names.PROMOTIONS_EXPERIMENT, location)  # or another team's, just made

    def write(run_id: str) -> None:
        for key, value in metrics.items():
            client.log_metric(run_id, f"winner_{key}", value)
        client.log_dict(run_id, evidence, "evidence.json")

    return keyed_run(settings, client, exp_id, _write_id(), run_name, tags, write, what=f"record {run_name}")


def record_report(
    settings: Settings,
    client: Any,
    exp_id: str,
    key: tuple[str, str],
    tags: dict[str, str],
    artifacts: list[tuple[Path, str | None]],
    documents: dict[str, Any],
) -> str:
    """The report run of ``key`` (tag, content digest): found when the same content was logged, else written once.

    ``artifacts``: (local file, artifact folder or None); ``documents``: file name -> JSON-able object.
    """

    def write(run_id: str) -> None:
        for local, folder in artifacts:
            client.log_artifact(run_id, str(local), artifact_path=folder)
        for name, obj in documents.items():
            client.log_dict(run_id, obj, name)

    return keyed_run(settings, client, exp_id, key, "report", tags, write, what=f"log report {key[1]}")
