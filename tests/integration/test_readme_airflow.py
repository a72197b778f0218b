"""The README's Airflow and MLflow sections, walked as a person would, in headless Chromium (Playwright driving
Debian's /usr/bin/chromium): `make airflow` in a fresh clone, the UI open without a login form, Trigger pressed with
the form's defaults, the run's task states and grid colours, a rerun shown as skipped, a broken model shown red,
and `cnn_promotion` started by the Asset; then `make ui-mlflow` on the same store. The screenshots land in docs/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog import get_profile
from tests import browser
from tests.conftest import REPO
from tests.integration.readme_stack import Clone, fresh_clone, start_airflow, start_mlflow_ui
from tests.integration.stack import Proc, http, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = REPO / "docs"
DAG = "cnn_evaluation"
DEMO = get_profile("demo").models  # the form's default profile


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Clone, Proc, str]]:
    browser.chromium()  # fail (CI) or skip loudly before starting anything
    clone = fresh_clone(tmp_path_factory.mktemp("readme"))
    try:
        airflow, url = start_airflow(clone)
        yield clone, airflow, url
    finally:
        clone.stop()


@pytest.fixture(scope="module")
def page(readme: tuple[Clone, Proc, str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser.chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield chromium.new_page(viewport={"width": 1400, "height": 1000})
        chromium.close()


def _api(url: str, path: str) -> Any:
    token = http("GET", f"{url}/auth/token")["access_token"]  # what the UI itself does with every visitor an admin
    return http("GET", f"{url}/api/v2{path}", token=token)


def _trigger(page: Any, url: str, fields: dict[str, str] | None = None, shot: Path | None = None) -> str:
    """Press Trigger on the DAG's page, fill ``fields`` (element id -> text) or leave the defaults, press Trigger."""
    page.goto(f"{url}/dags/{DAG}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    for element, text in (fields or {}).items():
        dialog.locator(f"#{element}").fill(text)
    if shot is not None:
        page.screenshot(path=str(shot))
    with page.expect_response(lambda r: r.url.endswith(f"/dags/{DAG}/dagRuns") and r.request.method == "POST") as r:
        dialog.get_by_role("button", name="Trigger", exact=True).click()
    assert r.value.status == 200, r.value.text()
    run_id = str(r.value.json()["dag_run_id"])
    page.goto("about:blank")  # the UI polls while open: not while the run trains on the same two cores
    return run_id


def _finished(url: str, dag: str, run_id: str, airflow: Proc, timeout: float) -> str:
    def done() -> str | None:
        state = _api(url, f"/dags/{dag}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    return str(wait_for(f"{dag} run {run_id}", done, timeout, [airflow], every=5))


def _ui_states(page: Any, url: str, dag: str, run_id: str) -> dict[tuple[str, str], str]:
    """The run page's task-instance table as a person reads it: (task, map index or its label) -> state.

    A finished mapped item shows its label (``resnet18.tv_in1k on cpu, edge``), an unmapped task none ("").
    """
    page.set_viewport_size({"width": 1400, "height": 4000})  # the table renders the rows in view only
    page.goto(f"{url}/dags/{dag}/runs/{run_id}", wait_until="networkidle")
    page.get_by_text("Task Instances").first.wait_for()
    page.locator("tbody tr td").nth(3).wait_for()
    states = {}
    for row in page.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        task, index, state = cells[1], cells[2], cells[3]
        states[(task, index)] = state.lower().replace(" ", "_")  # Airflow's own state names
    page.set_viewport_size({"width": 1400, "height": 1000})
    return states


def _grid_colour(page: Any, run_id: str, task: str) -> str:
    """The colour of ``task``'s cell in the grid beside the run (the run page is open)."""
    badge = page.locator(f'[data-testid="grid-{run_id}-{task}"] [data-testid="task-state-badge"]')
    badge.wait_for()
    return str(badge.evaluate("e => getComputedStyle(e).backgroundColor"))


def _measured(states: dict[tuple[str, str], str], models: tuple[str, ...]) -> dict[str, str]:
    """model -> state of its measure item: labelled ``<model> on <runners>``, or its index into ``models`` while the
    label is not rendered."""
    items = {label: s for (task, label), s in states.items() if task == "measure_default"}
    return {(models[int(label)] if label.isdigit() else label.split(" on ")[0]): s for label, s in items.items()}


@pytest.mark.timeout(2700)  # the demo sweep through Airflow: about 6 minutes on 2 idle cores, three runs in all
def test_the_readme_airflow_path(readme: tuple[Clone, Proc, str], page: Any, tmp_path: Path) -> None:
    clone, airflow, url = readme
    assert f"Airflow UI at {url} (no login" in airflow.tail(100_000)  # `make airflow` says where to go

    # the UI opens as an admin, no login form (local only); the DAGs are there, active
    wait_for("DAG parsed", lambda: _api(url, f"/dags/{DAG}"), 300, [airflow])
    page.goto(f"{url}/dags", wait_until="networkidle")
    page.get_by_text(DAG).first.wait_for()
    assert page.locator("input[type=password]").count() == 0
    assert not _api(url, f"/dags/{DAG}")["is_paused"] and not _api(url, "/dags/cnn_promotion")["is_paused"]

    # the cron slot already past when the DAG appeared is too late: it planned nothing and measured nothing
    for run in _api(url, f"/dags/{DAG}/dagRuns")["dag_runs"]:
        assert run["run_type"] == "scheduled", run
        _finished(url, DAG, run["dag_run_id"], airflow, 600)
        tis = _api(url, f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
        assert not [t for t in tis if t["task_id"] in ("pull", "measure_default") and t["state"] == "success"]

    # 1. Trigger with the form's defaults: the demo profile on the bundled digits, all green
    first = _trigger(page, url, shot=DOCS / "airflow-trigger.png")
    assert _finished(url, DAG, first, airflow, 1800) == "success", airflow.tail()
    states = _ui_states(page, url, DAG, first)
    assert _measured(states, DEMO) == dict.fromkeys(DEMO, "success"), states
    assert all(label.endswith(" on cpu, edge") for task, label in states if task == "measure_default")
    assert states[("verdict", "")] == "success" and states[("summarize", "")] == "success"
    green = _grid_colour(page, first, "prepare_data")
    assert _grid_colour(page, first, "measure_default") == green == _grid_colour(page, first, "verdict")
    page.screenshot(path=str(DOCS / "airflow-dag-run.png"))

    # its measure task's log is short, has no ERROR line, and ends with what it measured and where it logged it
    log = _task_log(url, first, "measure_default", 0)
    assert len(log) < 80, "\n".join(log)
    assert not [line for line in log if line.startswith("ERROR") or "great_expectations" in line], "\n".join(log)
    assert any(re.search(r"top1\s+0\.\d+", line) for line in log[-20:]), "\n".join(log[-20:])
    assert any("run_id" in line for line in log[-20:]) and any("model_uri" in line for line in log[-20:])

    # the sweep's Asset started cnn_promotion, which promoted and reported every team
    promotion = _promotion_after(url, airflow, first)
    assert _finished(url, "cnn_promotion", promotion, airflow, 600) == "success"
    promoted = _ui_states(page, url, "cnn_promotion", promotion)
    assert promoted[("report", "")] == "success" and all(
        s == "success" for (task, _), s in promoted.items() if task == "promote"
    ), promoted

    # 2. the same defaults again: nothing new, every measurement skipped (not green as if it were work)
    second = _trigger(page, url)
    assert _finished(url, DAG, second, airflow, 900) == "success"
    states = _ui_states(page, url, DAG, second)
    assert _measured(states, DEMO) == dict.fromkeys(DEMO, "skipped"), states
    skipped = _grid_colour(page, second, "measure_default")
    assert skipped != green

    # 3. a checkpoint that fits one of two models: the broken one is red, and so is the run; the other is measured
    ckpt = _resnet_checkpoint(tmp_path)
    third = _trigger(
        page, url, {"element_models": "\n".join(("test_resnet.r160_in1k", "test_efficientnet.r160_in1k")),
                    "element_weights": f"file:{ckpt}"},
    )  # fmt: skip
    assert _finished(url, DAG, third, airflow, 900) == "failed"
    states = _ui_states(page, url, DAG, third)
    pair = ("test_resnet.r160_in1k", "test_efficientnet.r160_in1k")
    assert _measured(states, pair) == {pair[0]: "success", pair[1]: "failed"}, states
    assert states[("verdict", "")] == "failed" and states[("summarize", "")] == "success"
    red = _grid_colour(page, third, "measure_default")
    assert red not in (green, skipped) and red == _grid_colour(page, third, "verdict")
    page.screenshot(path=str(DOCS / "airflow-failed-run.png"))

    # the MLflow UI of the README (`make ui-mlflow`) shows the runs of the same store
    _, ml = start_mlflow_ui(clone)
    exp = http("GET", f"{ml}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cnnselect/digits")
    # not "networkidle": MLflow 3.17's UI keeps a gateway-proxy request open for about 30 s (no gateway here)
    page.goto(f"{ml}/#/experiments/{exp['experiment']['experiment_id']}/runs", wait_until="load")
    page.get_by_text("resnet18.tv_in1k/cpu/fp32").first.wait_for(timeout=60_000)
    page.screenshot(path=str(DOCS / "mlflow-experiment.png"))


def _task_log(url: str, run_id: str, task: str, map_index: int) -> list[str]:
    """The task's log as the UI shows it: ``LEVEL message`` per line."""
    got = _api(url, f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/logs/1?map_index={map_index}")
    lines = []
    for entry in got["content"]:
        event = entry.get("event", "") if isinstance(entry, dict) else str(entry)
        level = (entry.get("level") or "info").upper() if isinstance(entry, dict) else "INFO"
        lines += [f"{level} {text}" for text in str(event).splitlines()]
        for exc in entry.get("error_detail") or [] if isinstance(entry, dict) else []:  # the UI's traceback
            lines.append(f"{level} {exc.get('exc_type')}: {exc.get('exc_value')}")
    return lines


def _promotion_after(url: str, airflow: Proc, sweep: str) -> str:
    began = _api(url, f"/dags/{DAG}/dagRuns/{sweep}")["start_date"]  # summarize announces before the run ends

    def started() -> str | None:
        runs = _api(url, "/dags/cnn_promotion/dagRuns")["dag_runs"]
        after = [r for r in runs if r["run_type"] == "asset_triggered" and (r["queued_at"] or "") >= began[:19]]
        return after[0]["dag_run_id"] if after else None

    return str(wait_for("cnn_promotion from the Asset", started, 300, [airflow], every=5))


def _resnet_checkpoint(tmp: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    path = tmp / "resnet.safetensors"
    save_file(timm.create_model("test_resnet.r160_in1k", num_classes=10).state_dict(), str(path))
    return path


def test_a_bad_trigger_is_refused_before_any_work(readme: tuple[Clone, Proc, str], page: Any) -> None:
    clone, airflow, url = readme
    wait_for("DAG parsed", lambda: _api(url, f"/dags/{DAG}"), 300, [airflow])
    run = _trigger(page, url, {"element_models": "resnet-18"})
    assert _finished(url, DAG, run, airflow, 900) == "failed"
    states = _ui_states(page, url, DAG, run)
    assert states[("plan", "")] == "failed" and states[("verdict", "")] == "failed", states
    assert {s for (task, _), s in states.items() if task in ("pull", "measure_default")} == {"upstream_failed"}
    assert states[("summarize", "")] == "skipped"  # nothing was planned: no asset, no promotion
    log = "\n".join(_task_log(url, run, "plan", -1))
    assert "unknown catalog entry 'resnet-18'. Did you mean 'resnet18.tv_in1k'" in log, log
