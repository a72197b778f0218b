"""The embedded deployment seen in a browser: `airflow standalone` (SQLite, LocalExecutor) and `mlflow ui` on the
SQLite store, opened in headless Chromium; the screenshots land in docs/ for the README."""

import os
import secrets

import pytest

from tests import browser
from tests.conftest import REPO, free_port
from tests.integration.stack import BIN, Stack, http, http_ok, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONF = {"profile": "smoke", "models": ["test_resnet.r160_in1k"], "runners": ["cpu"]}
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    browser.chromium()  # fail (CI) or skip loudly before starting anything
    root = tmp_path_factory.mktemp("embedded")
    api_port, ml_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "CNNSELECT"))}
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "CNNSELECT_EVALUATION_SCHEDULE": "none",  # no scheduled run competing with the test's manual one
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "true",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "CNNSELECT_HOME": str(root / "cnnselect"),
        "CNNSELECT_LATENCY_LOCK": str(root / "latency.lock"),
        # the stack's own processes share the cores: pass the suite's gate setting on (tests/conftest.py says why)
        "CNNSELECT_GATE_MAX_LATENCY_COV": os.environ.get("CNNSELECT_TEST_GATE_MAX_LATENCY_COV", "1e9"),
    })  # fmt: skip
    (root / "airflow").mkdir()
    s = Stack(root, env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ml_port}")
    try:
        s.run(str(BIN / "airflow"), "db", "migrate")
        s.run(str(BIN / "airflow"), "pools", "set", "cnnselect-cpu-host", "1", "cnnselect host pool")
        s.run(str(BIN / "airflow"), "pools", "set", "cnnselect-gpu-host", "1", "cnnselect host pool")
        procs = [
            s.start("standalone", str(BIN / "airflow"), "standalone"),
            s.start("mlflow-ui", str(BIN / "mlflow"), "ui", "--backend-store-uri",
                    f"sqlite:///{root / 'cnnselect' / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(ml_port)),
        ]  # fmt: skip
        wait_for("airflow api-server", lambda: http("GET", f"{s.airflow_url}/api/v2/monitor/health"), 300, procs)
        wait_for("mlflow ui", lambda: http_ok(f"{s.mlflow_url}/health"), 300, procs)
        yield s
    finally:
        s.stop()


def test_a_person_sees_the_successful_run_and_the_models(embedded: Stack) -> None:
    api = f"{embedded.airflow_url}/api/v2"
    token = embedded.token()
    wait_for("DAG parsed", lambda: http("GET", f"{api}/dags/cnn_evaluation", token=token), 300, embedded.procs)
    http("PATCH", f"{api}/dags/cnn_evaluation", {"is_paused": False}, token=token)
    run_id = http("POST", f"{api}/dags/cnn_evaluation/dagRuns", {"logical_date": None, "conf": CONF}, token=token)[
        "dag_run_id"
    ]

    def finished() -> str | None:
        state = http("GET", f"{api}/dags/cnn_evaluation/dagRuns/{run_id}", token=embedded.token())["state"]
        return state if state in ("success", "failed") else None

    assert wait_for("DAG run", finished, 1200, embedded.procs, every=5) == "success", embedded.procs[0].tail(6000)

    # Airflow's UI (a single-page app: give it time to fetch and render)
    run_page = f"{embedded.airflow_url}/dags/cnn_evaluation/runs/{run_id}"
    dom = browser.dump_dom(run_page, budget_ms=20000)
    assert "cnn_evaluation" in dom and "success" in dom.lower(), dom[-3000:]
    png = DOCS / "airflow-dag-run.png"
    assert browser.screenshot(run_page, png, height=1100, budget_ms=20000).returncode == 0
    assert png.stat().st_size > 10_000

    # MLflow's UI lists the evaluated model under the dataset's experiment
    exp = http("GET", f"{embedded.mlflow_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cnnselect/digits")
    exp_page = f"{embedded.mlflow_url}/#/experiments/{exp['experiment']['experiment_id']}/runs"  # the runs table
    dom = browser.dump_dom(exp_page, budget_ms=20000)
    assert "test_resnet.r160_in1k/cpu/fp32" in dom, dom[-3000:]
    png = DOCS / "mlflow-experiment.png"
    assert browser.screenshot(exp_page, png, height=1100, budget_ms=20000).returncode == 0
    assert png.stat().st_size > 10_000
