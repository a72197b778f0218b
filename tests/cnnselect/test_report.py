"""Frontier maths against a reference, the report against a real store, and the page rendered by headless Chromium."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from cnnselect.plots import pareto_front
from cnnselect.report import build, log_to_mlflow, team_tag
from registry.client import Registry
from registry.constraints import Constraints
from registry.settings import Settings
from tests import browser

TEAMS = [
    ("camera", Constraints(target="edge", max_latency_ms=2.0, min_top1=0.7, max_params_m=6)),
    ("server", Constraints(target="cpu", max_latency_ms=5.0, min_top1=0.85)),
    ("impossible", Constraints(target="cpu", max_params_m=0.5)),
]


def test_frontier_on_hand_made_points() -> None:
    pts = [(1.0, 0.80), (3.0, 0.90), (6.0, 0.85), (9.0, 0.97), (3.0, 0.88), (float("nan"), 0.99), (9.0, 0.97)]
    # (6, .85) is dominated by (3, .90); (3, .88) by (3, .90); NaN never counts; exact duplicates both stay
    assert pareto_front(pts) == [0, 1, 3, 6]
    assert pareto_front([]) == [] and pareto_front([(2.0, 0.5)]) == [0]


def _reference_front(pts: list[tuple[float, float]]) -> set[int]:
    """Sort-and-sweep: by cost ascending (best accuracy first on ties), keep each point that beats every cheaper one."""
    order = sorted(range(len(pts)), key=lambda i: (pts[i][0], -pts[i][1]))
    keep, best, best_x = set(), float("-inf"), None
    for i in order:
        x, y = pts[i]
        if y > best or (y == best and x == best_x):
            keep.add(i)
            best, best_x = y, x
    return keep


def test_frontier_matches_a_sort_and_sweep_reference() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 25)
        pts = [(float(rng.randint(1, 8)), rng.randint(50, 60) / 60) for _ in range(n)]  # small grids: many ties
        assert set(pareto_front(pts)) == _reference_front(pts), pts


@pytest.fixture(scope="module")
def report(measured_home: Path, tmp_path_factory: pytest.TempPathFactory):
    reg = Registry(settings=Settings(home=measured_home))
    return build(reg, TEAMS, tmp_path_factory.mktemp("report"), datasets=["digits"])


def test_report_names_champions_feasible_sets_and_reasons(report) -> None:
    teams = {t.name: t for t in report.teams}
    assert teams["camera"].champion.candidate.variant == "tiny"
    assert teams["server"].champion.candidate.variant == "mid"
    assert [v.candidate.variant for v in teams["server"].feasible] == ["mid"]
    assert teams["impossible"].champion is None and "NoFeasible" not in (teams["impossible"].error or "x")
    assert "satisfies every constraint" in teams["impossible"].error
    assert teams["server"].frontier == ["fast v1", "mid v2", "big v4"]  # slowbad is dominated by mid

    page = report.html.read_text()
    for t in report.teams:
        assert f"Team {t.name}" in page
    assert "models:/cnnselect-digits/5" in page and "models:/cnnselect-digits/2" in page  # the two champions
    # each rejection with its reason, as the selection module words it
    # big on cpu for server (upper bound 9*1.05), fast for server (lower bound .80-.02): each bound named as one
    assert "max_latency_ms: latency_p95_ms ≤ 9.45 (95% upper bound; point 9) fails 5" in page
    assert "min_top1: top1 ≥ 0.78 (95% lower bound; point 0.8) fails 0.85" in page
    assert page.count("max_params_m: params_m=") >= 4  # every cpu model for impossible
    assert page.count("data:image/png;base64,") == len(report.teams) + 2  # a picture per team and per runner
    for png in [*(t.plot for t in report.teams), *(v.plot for v in report.views)]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_logged_to_mlflow_once_and_team_tags_searchable(report, measured_home: Path) -> None:
    from mlflow import MlflowClient

    settings = Settings(home=measured_home)
    first = log_to_mlflow(settings, report)
    assert log_to_mlflow(settings, report) == first  # same content: the same run, nothing logged twice
    client = MlflowClient(settings.resolved_tracking_uri)
    arts = {a.path for a in client.list_artifacts(first["digits"], "plots")}
    assert arts == {"plots/team-camera.png", "plots/team-server.png", "plots/team-impossible.png",
                    "plots/digits-cpu.png", "plots/digits-edge.png"}  # fmt: skip
    assert {a.path for a in client.list_artifacts(first["digits"])} >= {"index.html", "report.json", "plots"}
    exp = client.get_experiment_by_name("cnnselect/digits")
    champs = client.search_runs([exp.experiment_id], f"tags.`{team_tag('server')}` = 'feasible-champion'")
    assert [r.info.run_name for r in champs] == ["mid/cpu/fp32"]


# The search expressions the README documents for the runs table, checked against MLflow's own parser and store.
SEARCHES = {
    "tags.`cnnselect.runner` = 'edge'": {"tiny/edge/int8", "mid/edge/int8"},
    "tags.cnnselect.runner = 'edge'": {"tiny/edge/int8", "mid/edge/int8"},
    "tags.`cnnselect.family` = 'resnet' and metrics.top1 > 0.9": {"big/cpu/fp32"},
    "tags.`cnnselect.team.server` LIKE 'feasible%'": {"mid/cpu/fp32"},
    "tags.`cnnselect.team.camera` = 'feasible-champion'": {"tiny/edge/int8"},
    "tags.`cnnselect.team.impossible` = 'infeasible'": {
        "fast/cpu/fp32",
        "mid/cpu/fp32",
        "slowbad/cpu/fp32",
        "big/cpu/fp32",
    },
    # MLflow's search grammar has no OR, and IN takes no tag values: these raise, so the README must not use them
    "tags.`cnnselect.runner` = 'edge' or tags.`cnnselect.runner` = 'cpu'": None,
    "tags.`cnnselect.team.server` IN ('feasible', 'feasible-champion')": None,
    "attributes.run_name LIKE '%/edge/%'": {"tiny/edge/int8", "mid/edge/int8"},
}


def test_readme_search_expressions(report, measured_home: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    settings = Settings(home=measured_home)
    log_to_mlflow(settings, report)
    client = MlflowClient(settings.resolved_tracking_uri)
    exp_id = client.get_experiment_by_name("cnnselect/digits").experiment_id
    for expr, expected in SEARCHES.items():
        if expected is None:
            with pytest.raises(MlflowException):
                client.search_runs([exp_id], expr)
            continue
        got = {r.info.run_name for r in client.search_runs([exp_id], expr)}
        assert got == expected, expr


def screenshot(page: Path, png: Path, height: int = 2000) -> subprocess.CompletedProcess:
    return browser.screenshot(page.as_uri(), png, height=height)


def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    out = screenshot(report.html, png)
    assert out.returncode == 0, out.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses to a few KB
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((64, 100)).getcolors(64 * 100)
        assert colours is not None and len(colours) > 20  # text, tables and plots, not one flat colour


def test_report_shows_each_models_runtime_frontier_per_host(report) -> None:
    (hosts,) = report.frontiers["digits"].values()  # one measuring machine
    mid = hosts["mid"]
    assert [(a.candidate.runner, a.on_frontier, a.fastest) for a in mid] == [("edge", True, True), ("cpu", True, False)]
    page = report.html.read_text()
    assert "Runtime frontier per host" in page and "on the frontier" in page
    d = report.to_dict()["runtime_frontiers"]["digits"]
    assert [a["runner"] for a in next(iter(d.values()))["mid"]] == ["edge", "cpu"]
