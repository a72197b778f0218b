"""Every MLflow write goes through :mod:`registry.writes`, retried and idempotent.

The source of the packages and the DAG files is parsed: an MLflow write method called (or passed as a value)
anywhere but ``registry/writes.py`` fails, naming the file and line. Then a write whose response is lost (the store
wrote, the client saw a transient error) is retried without leaving a twin run, on a real SQLite store.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from registry import names
from registry.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("catalog", "evaluators", "registry", "cnnselect", "dags")
WRITES_MODULE = Path("registry/writes.py")

# MlflowClient's and the fluent API's (``mlflow.*``, ``mlflow.<flavor>.*``) methods that change the store
WRITE_METHODS = frozenset(
    {
        # experiments
        "create_experiment", "delete_experiment", "restore_experiment", "rename_experiment", "set_experiment",
        "set_experiment_tag", "set_experiment_tags", "delete_experiment_tag",
        # runs
        "start_run", "end_run", "create_run", "delete_run", "restore_run", "set_terminated", "update_run",
        "log_metric", "log_metrics", "log_param", "log_params", "log_batch", "set_tag", "set_tags", "delete_tag",
        "log_artifact", "log_artifacts", "log_dict", "log_text", "log_figure", "log_image", "log_table",
        "log_input", "log_inputs", "log_outputs", "log_model",
        # logged models
        "create_logged_model", "initialize_logged_model", "finalize_logged_model", "delete_logged_model",
        "set_logged_model_tags", "delete_logged_model_tag", "log_model_params", "create_external_model",
        # the model registry
        "register_model", "create_registered_model", "rename_registered_model", "update_registered_model",
        "delete_registered_model", "set_registered_model_tag", "delete_registered_model_tag",
        "create_model_version", "update_model_version", "delete_model_version", "copy_model_version",
        "transition_model_version_stage", "set_model_version_tag", "delete_model_version_tag",
        "set_registered_model_alias", "delete_registered_model_alias",
    }
)  # fmt: skip


def _writes_outside(path: Path) -> list[str]:
    """``file:line: name`` for each MLflow write method the file calls or refers to."""
    tree = ast.parse(path.read_text(), filename=str(path))
    from_mlflow = {  # ``from mlflow import log_metric`` and the like: the bare name is the write
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow"
        for alias in node.names
        if alias.name in WRITE_METHODS
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and node.attr in WRITE_METHODS:
            name = node.attr
        elif isinstance(node, ast.Name) and node.id in from_mlflow:
            name = node.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            arg = node.args[1] if len(node.args) > 1 else None
            if isinstance(arg, ast.Constant) and arg.value in WRITE_METHODS:
                name = str(arg.value)
        if name is not None:
            found.append((node.lineno, f"{path.relative_to(REPO)}:{node.lineno}: {name}"))
    return [hit for _, hit in sorted(found)]


def test_every_mlflow_write_is_in_registry_writes() -> None:
    files = sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py"))
    assert REPO / WRITES_MODULE in files and len(files) > 30
    outside = [hit for p in files if p.relative_to(REPO) != WRITES_MODULE for hit in _writes_outside(p)]
    assert not outside, "MLflow writes outside registry/writes.py (add a function there):\n" + "\n".join(outside)
    assert len(_writes_outside(REPO / WRITES_MODULE)) > 20  # the guard sees the writes where they are


def test_the_guard_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.registry.test_writes.REPO", tmp_path)
    src = tmp_path / "x.py"
    src.write_text(
        "import mlflow\nfrom mlflow import log_metric as lm\n"
        "def f(client):\n    client.set_registered_model_alias('m', 'a', '1')\n    lm('k', 1.0)\n"
        "    getattr(client, 'delete_run')('r')\n    client.search_runs(['0'])\n"
    )
    assert _writes_outside(src) == [
        "x.py:4: set_registered_model_alias", "x.py:5: lm", "x.py:6: delete_run",
    ]  # fmt: skip


# -- a retried write after a lost response --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _lose_responses(monkeypatch: pytest.MonkeyPatch, method: str, times: int = 1) -> list[str]:
    """The tracking store's ``method`` writes, then raises a transient error ``times`` times: the response is lost."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    original, lost = getattr(SqlAlchemyStore, method), []

    def losing(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        if len(lost) < times:
            lost.append(method)
            raise ConnectionError(f"connection aborted after {method}")  # what a dropped HTTP response raises
        return out

    monkeypatch.setattr(SqlAlchemyStore, method, losing)
    return lost


def _runs(settings: Settings, experiment: str) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


@pytest.mark.parametrize("method", ["create_run", "update_run_info"])  # the create, the end (set_terminated)
def test_a_promotion_record_whose_response_is_lost_is_written_once(
    store: Settings, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    import mlflow

    from registry import writes
    from registry.tracking import _client

    client = _client(store)
    writes.experiment(store, client, names.PROMOTIONS_EXPERIMENT, None)  # the schema, before the faults
    lost = _lose_responses(monkeypatch, method)
    tags = {names.TAG_TEAM: "vision", names.TAG_DATASET: "d"}
    run_id = writes.record_promotion(store, client, tags, "vision: v- -> v1", {"top1": 0.9}, {"reason": "first"})
    assert lost == [method]  # the fault happened, and was retried
    runs = _runs(store, names.PROMOTIONS_EXPERIMENT)
    assert [r.info.run_id for r in runs] == [run_id]  # one run: the half-written one deleted, the complete one kept
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.metrics == {"winner_top1": 0.9}
    assert run.data.tags[names.TAG_TEAM] == "vision" and names.TAG_WRITE in run.data.tags
    evidence = Path(mlflow.MlflowClient(store.resolved_tracking_uri).download_artifacts(run_id, "evidence.json"))
    assert json.loads(evidence.read_text()) == {"reason": "first"}


def test_a_failure_record_whose_create_is_lost_is_written_once(
    store: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry.writes import ensure_experiment, log_failure

    ensure_experiment(store, "lost")
    lost = _lose_responses(monkeypatch, "create_run")
    run_id = log_failure(store, "lost", "m", "cpu", "export", "boom", "k1", "s1")
    assert lost == ["create_run"]
    runs = _runs(store, names.experiment_name("lost"))
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FAILED")]
    assert runs[0].data.tags[names.TAG_ERROR] == "boom"


def test_a_report_run_is_found_by_its_key_not_written_twice(
    store: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from registry import writes
    from registry.tracking import _client

    page = tmp_path / "report.html"
    page.write_text("<html></html>")
    client = _client(store)
    exp_id = writes.experiment(store, client, "cnnselect/d/reports", None)
    lost = _lose_responses(monkeypatch, "update_run_info")
    key = ("cnnselect.report_key", "k" * 32)
    first = writes.record_report(store, client, exp_id, key, {}, [(page, None)], {"report.json": {"a": 1}})
    assert lost == ["update_run_info"]
    assert writes.record_report(store, client, exp_id, key, {}, [(page, None)], {"report.json": {"a": 1}}) == first
    runs = _runs(store, "cnnselect/d/reports")
    assert [r.info.run_id for r in runs] == [first]
    paths = {a.path for a in client.list_artifacts(first)}
    assert paths == {"report.html", "report.json"}
