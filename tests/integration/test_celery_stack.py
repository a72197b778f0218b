"""Production topology from real processes: PostgreSQL + Redis + `mlflow server` + Airflow (api-server, scheduler,
dag-processor) with the CeleryExecutor and two workers on different queues. Triggered through Airflow's REST API,
checked through MLflow's REST API."""

import re
import urllib.parse
import uuid

import pytest

from tests.conftest import free_port, fresh_postgres_db, port_open, service_missing
from tests.integration.stack import BIN, PRELOAD, Stack, celery_stack, http, http_ok, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONF = {"profile": "smoke", "models": ["test_efficientnet.r160_in1k"], "runners": ["cpu", "edge"]}


@pytest.fixture(scope="module")
def stack(postgres_admin_uri: str, tmp_path_factory: pytest.TempPathFactory):
    if not port_open("127.0.0.1", 6379):
        service_missing("Redis", "nothing listens on 127.0.0.1:6379")
    root = tmp_path_factory.mktemp("celery-stack")
    broker = f"redis://127.0.0.1:6379/{_idle_redis_db()}"
    mlflow_db = fresh_postgres_db(postgres_admin_uri)
    s = celery_stack(root, fresh_postgres_db(postgres_admin_uri), broker)
    try:
        s.init_airflow()
        ml_port = s.mlflow_url.rsplit(":", 1)[1]
        procs = [
            s.start_mlflow_server(mlflow_db),
            s.start("api-server", str(BIN / "airflow"), "api-server", "--port", s.airflow_url.rsplit(":", 1)[1]),
            s.start("scheduler", str(BIN / "airflow"), "scheduler"),
            s.start("dag-processor", str(BIN / "airflow"), "dag-processor"),
            s.start(
                "worker-default",
                str(BIN / "airflow"),
                "celery",
                "worker",
                "-q",
                "default",
                "--celery-hostname",
                "default@cnnselect",
                "--concurrency",
                "1",
                env=PRELOAD,
            ),
            s.start(
                "worker-edge",
                str(BIN / "airflow"),
                "celery",
                "worker",
                "-q",
                "edge",
                "--celery-hostname",
                "edge@cnnselect",
                "--concurrency",
                "1",
                env={**PRELOAD, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},  # two workers, one host
            ),
        ]
        wait_for(
            "mlflow server",
            lambda: port_open("127.0.0.1", int(ml_port)) and http_ok(f"{s.mlflow_url}/health"),
            300,
            procs,
        )
        wait_for("airflow api-server", lambda: http("GET", f"{s.airflow_url}/api/v2/monitor/health"), 300, procs)
        yield s
    finally:
        s.stop()


def _idle_redis_db() -> int:
    """A Redis DB no client is connected to, so no stray worker can take this test's tasks."""
    import redis

    busy = {int(c.get("db", 0)) for c in redis.Redis(host="127.0.0.1", port=6379).client_list()}
    free = [n for n in range(1, 16) if n not in busy]
    if not free:
        pytest.fail(f"every Redis DB 1-15 has clients connected: {sorted(busy)}")
    db = free[uuid.uuid4().int % len(free)]
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    return db


def test_evaluation_runs_on_celery_workers_and_lands_in_mlflow(stack: Stack) -> None:
    token = stack.token()
    api = f"{stack.airflow_url}/api/v2"
    wait_for("DAG parsed", lambda: http("GET", f"{api}/dags/cnn_evaluation", token=token), 300, stack.procs)
    http("PATCH", f"{api}/dags/cnn_evaluation", {"is_paused": False}, token=token)
    run = http("POST", f"{api}/dags/cnn_evaluation/dagRuns", {"logical_date": None, "conf": CONF}, token=token)
    run_id = run["dag_run_id"]

    def finished() -> str | None:
        state = http("GET", f"{api}/dags/cnn_evaluation/dagRuns/{run_id}", token=stack.token())["state"]
        return state if state in ("success", "failed") else None

    assert wait_for("DAG run", finished, 1500, stack.procs, every=5) == "success", _logs(stack)

    tis = http("GET", f"{api}/dags/cnn_evaluation/dagRuns/{run_id}/taskInstances?limit=100", token=stack.token())
    by_task = {(t["task_id"], t["map_index"]): t for t in tis["task_instances"]}
    assert by_task[("measure_edge", 0)]["state"] == "success" and by_task[("measure_edge", 0)]["queue"] == "edge"
    assert by_task[("measure_default", 0)]["state"] == "success"
    assert by_task[("measure_default", 0)]["queue"] == "default"
    assert not [t for t, _ in by_task if t == "measure_gpu"]  # no gpu worker deployed: no row for it
    # each queue's tasks ran on the worker that listens to it, and only there
    edge_log = (stack.root / "worker-edge.log").read_text(errors="replace")
    default_log = (stack.root / "worker-default.log").read_text(errors="replace")

    def ran(task_id: str, log: str) -> bool:
        return re.search(rf"Executing workload in Celery:.*task_id={task_id}/", log) is not None

    assert ran("measure_edge", edge_log) and not ran("measure_edge", default_log)
    assert ran("measure_default", default_log) and not ran("measure_default", edge_log)
    assert ran("pull", default_log) and not ran("pull", edge_log)
    # each worker imported the measuring stack before its pool forked (the tasks above ran in processes forked after)
    assert "cnnselect worker: preloaded" in edge_log and "cnnselect worker: preloaded" in default_log

    # results landed, read back through MLflow's REST API
    ml = f"{stack.mlflow_url}/api/2.0/mlflow"
    exp = http("GET", f"{ml}/experiments/get-by-name?experiment_name=cnnselect/digits")["experiment"]
    runs = http(
        "POST",
        f"{ml}/runs/search",
        {"experiment_ids": [exp["experiment_id"]], "filter": f"tags.`cnnselect.sweep` = '{run_id}'"},
    )["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert sorted(t["cnnselect.runner"] for t in tags) == ["cpu", "edge"]
    assert all(t["cnnselect.status"] == "ok" for t in tags)
    versions = http(
        "GET", f"{ml}/model-versions/search?" + urllib.parse.urlencode({"filter": "name = 'cnnselect-digits'"})
    )
    assert len(versions["model_versions"]) == 2


def _logs(stack: Stack) -> str:
    return "\n".join(f"--- {p.name}\n{p.tail(2500)}" for p in stack.procs)
