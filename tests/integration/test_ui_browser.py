"""The embedded deployment seen in a browser: `airflow standalone` (SQLite, LocalExecutor) and `mlflow ui` on the
SQLite store, opened in headless Chromium; the screenshots land in docs/ for the README."""

import pytest

from tests import browser
from tests.conftest import REPO
from tests.integration.stack import BIN, Stack, http, http_ok, local_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONF = {"profile": "smoke", "models": ["test_resnet.r160_in1k"], "runners": ["cpu"]}
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    browser.chromium()  # fail (CI) or skip loudly before starting anything
    root = tmp_path_factory.mktemp("embedded")
    s = local_stack(root, {})  # SQLite metadata DB, LocalExecutor (standalone), the SQLite MLflow store
    try:
        s.init_airflow()
        procs = [
            s.start("standalone", str(BIN / "airflow"), "standalone"),
            s.start("mlflow-ui", str(BIN / "mlflow"), "ui", "--backend-store-uri",
                    f"sqlite:///{root / 'cnnselect' / 'mlflow.db'}", "--host", "127.0.0.1",
                    "--port", s.mlflow_url.rsplit(":", 1)[1]),
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
