"""``cnnselect report``/``best --team``/``leaderboard`` on a real store: exit codes and --json a script can rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cnnselect.test_cli import run
from tests.conftest import free_port


def test_report_json_names_each_champion_and_writes_the_page(measured_home: Path, teams_dir: Path, tmp_path) -> None:
    out = run("report", "--teams", str(teams_dir), "--out", str(tmp_path / "r"), "--json", home=measured_home)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    payload = json.loads(out.stdout)  # exactly one JSON document on stdout
    teams = {t["team"]: t for t in payload["teams"]}
    assert teams["camera"]["champion_variant"] == "tiny" and teams["server"]["champion_variant"] == "mid"
    assert teams["impossible"]["champion"] is None and "satisfies every constraint" in teams["impossible"]["error"]
    assert all("max_params_m" in why for why in teams["impossible"]["rejected"].values())
    assert set(payload["mlflow_runs"]) == {"digits"}
    page = Path(payload["html"]).read_text()
    assert "Team camera" in page and "Team impossible" in page and teams["server"]["champion"] in page


def test_report_of_one_unknown_team_exits_2_listing_the_teams(measured_home: Path, teams_dir: Path) -> None:
    out = run("report", "--teams", str(teams_dir), "--team", "servr", "--no-mlflow", "--json", home=measured_home)
    assert out.returncode == 2
    err = json.loads(out.stdout)
    assert err["error"] == "UnknownTeamError" and "Did you mean 'server'" in err["message"]
    assert "camera, impossible, server" in err["message"]


def test_best_by_team(measured_home: Path, teams_dir: Path) -> None:
    ok = run("best", "--team", "server", "--teams-dir", str(teams_dir), "--json", home=measured_home)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert json.loads(ok.stdout)["variant"] == "mid"
    none = run("best", "--team", "impossible", "--teams-dir", str(teams_dir), "--json", home=measured_home)
    assert none.returncode == 3 and json.loads(none.stdout)["error"] == "NoFeasibleModelError"
    mixed = run("best", "--team", "server", "--teams-dir", str(teams_dir), "--max-latency-ms", "1", home=measured_home)
    assert mixed.returncode == 2 and "takes its constraints from the team file" in mixed.stdout


def test_leaderboard_of_an_unknown_dataset_exits_1_naming_the_measured_ones(measured_home: Path) -> None:
    out = run("leaderboard", "--dataset", "imagenet", "--json", home=measured_home)
    assert out.returncode == 1
    err = json.loads(out.stdout)
    assert err["error"] == "NothingMeasured" and err["datasets"] == ["digits"]
    rows = json.loads(run("leaderboard", "--json", home=measured_home).stdout)
    assert [r["variant"] for r in rows if r["runner"] == "cpu"] == ["big", "mid", "slowbad", "fast"]


def test_catalog_list_unknown_family_exits_2_listing_families(tmp_path: Path) -> None:
    out = run("catalog", "list", "--family", "resnt", home=tmp_path)
    assert out.returncode == 2 and "mobilenetv3" in out.stderr and "invalid choice" in out.stderr


@pytest.mark.timeout(120)
def test_unreachable_store_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = run("leaderboard", "--json", home=tmp_path)
    assert out.returncode == 4, out.stdout + out.stderr[-2000:]
    err = json.loads(out.stdout)
    assert err["exit_code"] == 4 and "127.0.0.1" in err["message"]
