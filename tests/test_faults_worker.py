"""A worker killed mid-task: the retry yields exactly one run and one version (the fault battery's worker case).

An Airflow worker that dies (OOM killer, a lost node, ``kill -9``) takes the task's process with it wherever it was
in its writes, and Airflow runs the task again in a new process. A subprocess that SIGKILLs itself between two writes
to the store stands for that worker: like a lost worker it gets no chance to clean up, and the retry shares nothing
with it but the store. That Airflow retries the task is Airflow's retry semantics (``retries`` on every DAG); what
is asserted here is the store-level invariant the retry must restore: one active ``ok`` run for the key, one
non-deleted version with all its tags, one candidate, and the failure record of an earlier attempt left as history.
"""

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from registry import names
from registry.settings import Settings
from registry.tracking import DatasetRef, Evaluation
from tests.onnx_models import write_linear

METRICS = {"top1": 0.5, "top1_ci_low": 0.45, "latency_p95_ms": 1.0, "size_mb": 0.001, "onnx_parity_ok": 1.0}

KILL_POINTS = {  # the store write the worker dies at: after it, or just before it
    "run_created": ("tracking", "create_run", "after"),
    "model_logged": ("tracking", "log_outputs", "after"),
    "version_registered": ("registry", "create_model_version", "after"),
    "before_status_ok": ("tracking", "set_tag", "before"),  # the run's status=ok, the attempt's last write
}
PRELOAD = [
    "tests.test_faults_worker", "registry.tracking", "registry.writes", "mlflow.onnx", "mlflow.models",
    "mlflow.data.meta_dataset", "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
]  # fmt: skip


def worker(uri: str, point: str, dataset: str, artifact: str) -> None:
    """The Airflow worker: logs one evaluation and SIGKILLs itself at a store write (nothing after it runs)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    from registry.writes import log_evaluation

    where, method, when = KILL_POINTS[point]
    store = TrackingStore if where == "tracking" else RegistryStore
    original = getattr(store, method)

    def dying(self: object, *args: object, **kwargs: object) -> object:
        tag = args[1] if method == "set_tag" else None
        at = tag is None or (getattr(tag, "key", ""), getattr(tag, "value", "")) == (names.TAG_STATUS, "ok")
        if at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = original(self, *args, **kwargs)
        if at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(store, method, dying)
    log_evaluation(Settings(tracking_uri=uri), evaluation(dataset, artifact))


def evaluation(dataset: str, artifact: str | Path) -> Evaluation:
    x = np.ones((1, 4), np.float32)
    ref = DatasetRef(dataset, "d" * 64, str(Path(artifact).parent), ("a", "b", "c"), "h" * 64, 3)
    return Evaluation(
        "m1", "test", "cpu", "fp32", ref, f"key-{dataset}", "sweep-1", {"runner": "cpu", "batch_size": "1"}, "fp",
        "w" * 64, "file", Path(artifact), x, x[:, :3], {"variant": "m1"}, METRICS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One SQLite store for the module (its schema takes seconds); each case keeps apart by dataset name."""
    from registry.writes import ensure_experiment

    root = tmp_path_factory.mktemp("worker")
    settings = Settings(home=root / "home", tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    ensure_experiment(settings, "schema")
    return settings


def _runs(client, exp_id: str, key: str) -> list:
    from mlflow.entities import ViewType

    return list(client.search_runs([exp_id], f"tags.`{names.TAG_KEY}` = '{key}'", run_view_type=ViewType.ALL))


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_worker_killed_mid_log_then_retried_leaves_one_run_and_one_version(
    store: Settings, tmp_path: Path, point: str
) -> None:
    import mlflow

    from registry.client import Registry
    from registry.tracking import find_finished, find_finished_many
    from registry.writes import ensure_experiment, log_evaluation, log_failure

    dataset, artifact = f"w-{point.replace('_', '-')}", write_linear(tmp_path / "model")
    ev = evaluation(dataset, artifact)
    model = names.registered_model_name(dataset)
    client = mlflow.MlflowClient(store.resolved_tracking_uri)
    exp_id = ensure_experiment(store, dataset)
    failed = log_failure(store, dataset, "m1", "cpu", "latency", "an earlier attempt failed", ev.key, "sweep-0")

    # forkserver: a fresh process per worker, forked from a server that imported MLflow once (no store connection)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    child = ctx.Process(target=worker, args=(store.resolved_tracking_uri, point, dataset, str(artifact)))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL  # killed, mid-task, by the signal a lost worker gets

    (killed,) = [r for r in _runs(client, exp_id, ev.key) if r.info.run_id != failed]
    assert killed.data.tags[names.TAG_STATUS] == "running" and killed.info.lifecycle_stage == "active"
    left = client.search_model_versions(f"name = '{model}'")
    assert len(left) == (1 if point in ("version_registered", "before_status_ok") else 0)
    assert find_finished(store, dataset, ev.key) is None  # a half-written run is never a result

    logged = log_evaluation(store, ev)  # the retry, in another process than the killed attempt

    runs = {r.info.run_id: r for r in _runs(client, exp_id, ev.key)}
    active = [r for r in runs.values() if r.info.lifecycle_stage == "active"]
    assert sorted(r.data.tags[names.TAG_STATUS] for r in active) == ["failed", "ok"]  # the failure stays: history
    (ok,) = [r for r in active if r.data.tags[names.TAG_STATUS] == names.STATUS_OK]
    assert ok.info.run_id == logged.run_id and ok.info.status == "FINISHED"
    assert runs[killed.info.run_id].info.lifecycle_stage == "deleted"
    assert ok.data.tags["cnnselect.replaced"] == killed.info.run_id
    assert runs[failed].data.tags[names.TAG_ERROR] == "an earlier attempt failed"

    (mv,) = client.search_model_versions(f"name = '{model}'")
    assert (str(mv.version), mv.run_id) == (logged.version, logged.run_id)
    expected = {k: v for k, v in ok.data.tags.items() if k in names.VERSION_TAGS}  # the run's own, where declared
    expected.update({names.TAG_STATUS: "ok", names.TAG_RUN_ID: logged.run_id})
    expected[names.TAG_CARD] = names.card(expected, METRICS)  # the figures on the card alone
    assert mv.tags == expected and len(mv.tags) <= 20 and not any(".metric." in k for k in mv.tags)
    assert ok.data.metrics == METRICS  # every metric stays on the run
    models = client.search_logged_models([exp_id])
    assert [m.source_run_id for m in models] == [logged.run_id]

    assert find_finished(store, dataset, ev.key) == logged.run_id
    assert find_finished_many(store, dataset, [ev.key, "key-other"]) == {ev.key: logged.run_id}
    (candidate,) = Registry(settings=store).candidates(dataset)
    assert (candidate.version, candidate.run_id) == (logged.version, logged.run_id)
    assert log_evaluation(store, ev) == logged  # a retry after the last write logs nothing new


@pytest.mark.parametrize("error", ["database is locked", "a bug"])
def test_attempt_failing_after_its_version_leaves_nothing_half_written(
    store: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """In one process: a store error after the version exists. Transient: retried to one run and one version;
    anything else: raised, with the attempt's run, version and logged model deleted (nothing half-written stays)."""
    import mlflow
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from registry.writes import ensure_experiment, log_evaluation

    dataset = f"w-raise-{error.split()[-1]}"
    ev = evaluation(dataset, write_linear(tmp_path / "model"))
    original, failures = SqlAlchemyStore.create_model_version, []

    def failing(self: object, *args: object, **kwargs: object) -> object:
        out = original(self, *args, **kwargs)
        if not failures:
            failures.append(out)
            raise RuntimeError(error)
        return out

    monkeypatch.setattr(SqlAlchemyStore, "create_model_version", failing)
    client = mlflow.MlflowClient(store.resolved_tracking_uri)
    exp_id = ensure_experiment(store, dataset)
    if error == "a bug":
        with pytest.raises(RuntimeError, match="a bug"):
            log_evaluation(store, ev)
        assert [r.info.lifecycle_stage for r in _runs(client, exp_id, ev.key)] == ["deleted"]
        assert client.search_model_versions(f"name = '{names.registered_model_name(dataset)}'") == []
        assert client.search_logged_models([exp_id]) == []
        return
    logged = log_evaluation(store, ev)
    runs = _runs(client, exp_id, ev.key)
    assert sorted((r.info.lifecycle_stage, r.data.tags[names.TAG_STATUS]) for r in runs) == [
        ("active", "ok"),
        ("deleted", "running"),
    ]
    (mv,) = client.search_model_versions(f"name = '{names.registered_model_name(dataset)}'")
    assert (str(mv.version), mv.run_id) == (logged.version, logged.run_id) and mv.version != failures[0].version
    (ok,) = [r for r in runs if r.info.lifecycle_stage == "active"]
    (deleted,) = [r for r in runs if r.info.lifecycle_stage == "deleted"]
    assert ok.data.tags["cnnselect.replaced"] == deleted.info.run_id


def test_gate_runs_found_by_key_and_verdict(store: Settings) -> None:
    from registry.tracking import find_finished, find_gate_run
    from registry.writes import log_gate

    passed = log_gate(store, "w-gates", "heldout", {"success": True}, True, "gate-k1")
    failed = log_gate(store, "w-gates", "heldout", {"success": False}, False, "gate-k2")
    assert find_gate_run(store, "w-gates", "gate-k1", passed=True) == passed
    assert find_gate_run(store, "w-gates", "gate-k2", passed=True) is None
    assert find_gate_run(store, "w-gates", "gate-k2", passed=False) == find_gate_run(store, "w-gates", "gate-k2")
    assert find_gate_run(store, "w-gates", "gate-k2") == failed
    assert find_finished(store, "w-gates", "gate-k1") is None  # a gate run is no evaluation
