"""The operator's first hour: a fresh home, a folder of teams with bad files, constraints in the wrong unit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cnnselect.conftest import TEAMS_YAML
from tests.cnnselect.test_cli import run

BAD_TEAMS = {  # file stem -> (text, what the error must say)
    "typo": ("name: typo\nconstraints: {max_latency: 5}\n", "unknown Constraints key 'max_latency'. Did you mean"),
    "percent": ("name: percent\nconstraints: {min_top1: 95}\n", "min_top1 is a fraction in [0, 1]"),
    "broken": ("name: broken\nconstraints: [\n", "cannot read team file"),
    "renamed": ("name: other\nconstraints: {}\n", "team name 'other' must match the file name 'renamed'"),
}


@pytest.fixture
def mixed_teams(teams_dir: Path) -> Path:
    """The three good teams of ``teams_dir`` and four bad files beside them."""
    for stem, (text, _) in BAD_TEAMS.items():
        (teams_dir / f"{stem}.yaml").write_text(text)
    return teams_dir


@pytest.fixture
def own_home(measured_home: Path, tmp_path: Path) -> Path:
    """A copy of the measured store this test may promote in (the session's store stays as it was)."""
    home = tmp_path / "home"
    shutil.copytree(measured_home, home)
    return home


@pytest.mark.parametrize("command", [["best"], ["leaderboard"], ["best", "--json"], ["leaderboard", "--json"]])
def test_fresh_home_says_what_to_run_and_writes_nothing(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    out = run(*command, home=home, columns=80)
    assert out.returncode == 1, out.stdout + out.stderr[-2000:]
    text = out.stdout.replace("\n", " ")
    assert "nothing is measured yet" in text and "cnnselect demo" in text and "cnnselect evaluate" in text
    assert "no such table" not in out.stdout + out.stderr
    if "--json" in command:
        assert json.loads(out.stdout)["error"] == "NothingMeasuredError"
    assert list(home.iterdir()) == []  # no empty mlflow.db left behind


def test_teams_validate_reports_every_bad_file(mixed_teams: Path, tmp_path: Path) -> None:
    out = run("teams", "validate", "--teams-dir", str(mixed_teams), home=tmp_path, columns=80)
    assert out.returncode == 2
    text = " ".join(out.stdout.split())
    for stem, (_, said) in BAD_TEAMS.items():
        assert f"{stem}.yaml" in text and said in text, stem
    assert "(did you mean 0.95?)" in text and "constraints.min_top1" in text
    for good in TEAMS_YAML:
        assert f"ok {good}" in text
    assert "4 of 7 team files do not validate" in text
    doc = json.loads(run("teams", "validate", "--teams-dir", str(mixed_teams), "--json", home=tmp_path).stdout)
    assert sorted(Path(f["file"]).name for f in doc["files"]) == sorted(f"{s}.yaml" for s in BAD_TEAMS)
    assert sorted(t["name"] for t in doc["teams"]) == sorted(TEAMS_YAML)


def test_promote_does_the_good_teams_and_lists_every_bad_file(mixed_teams: Path, own_home: Path) -> None:
    out = run("promote", "--teams-dir", str(mixed_teams), "--json", home=own_home)
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    doc = json.loads(out.stdout)
    decisions = {d["team"]: d for d in doc["decisions"]}
    assert decisions["camera"]["action"] == "promoted" and decisions["camera"]["champion_variant"] == "tiny"
    assert decisions["server"]["action"] == "promoted" and decisions["server"]["champion_variant"] == "mid"
    assert decisions["impossible"]["action"] == "none"
    assert sorted(Path(f["file"]).name for f in doc["files"]) == sorted(f"{s}.yaml" for s in BAD_TEAMS)

    again = run("promote", "--teams-dir", str(mixed_teams), home=own_home, columns=80)
    assert again.returncode == 2
    text = again.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    block = text[text.index("server: kept") :].split("\n\n")[0]
    assert "champion:   mid v2 (kept)" in block and "challenger: mid v2" in block
    assert "min_top1: top1 ≥ 0.88 (95% lower bound; point 0.9) meets 0.85" in block
    impossible = text[text.index("impossible: none") : text.index("server: kept")]
    assert "vNone" not in text and "family=0" not in text
    assert "fast v1 (infeasible):" in impossible and "max_params_m: params_m=2 fails 0.5" in impossible
    for stem, (_, said) in BAD_TEAMS.items():
        assert f"{stem}.yaml" in text and said in " ".join(text.split()), stem


def test_report_draws_the_good_teams_and_lists_every_bad_file(mixed_teams: Path, measured_home: Path, tmp_path) -> None:
    out = run("report", "--teams", str(mixed_teams), "--out", str(tmp_path / "r"), "--no-mlflow", "--json",
              home=measured_home)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert sorted(t["team"] for t in doc["teams"]) == sorted(TEAMS_YAML)
    assert {t["team"]: t["champion_variant"] for t in doc["teams"]}["server"] == "mid"
    assert sorted(Path(f["file"]).name for f in doc["invalid_team_files"]) == sorted(f"{s}.yaml" for s in BAD_TEAMS)
    page = Path(doc["html"]).read_text()
    assert "Team files left out (4)" in page and "Team server" in page and "percent.yaml" in page


def test_top1_as_a_percentage_is_refused_with_the_fraction(measured_home: Path) -> None:
    out = run("best", "--min-top1", "95", home=measured_home, columns=80)
    assert out.returncode == 2
    text = " ".join(out.stdout.split())
    assert "min_top1 is a fraction in [0, 1], not a percentage: got 95 (did you mean 0.95?)" in text
    assert "errors.pydantic.dev" not in text


def test_unknown_dataset_names_the_measured_ones(measured_home: Path) -> None:
    out = run("best", "--dataset", "Digit", "--json", home=measured_home)
    assert out.returncode == 3
    doc = json.loads(out.stdout)
    assert "Did you mean 'digits'?" in doc["message"] and doc["datasets"] == ["digits"]
    board = run("leaderboard", "--dataset", "hidden_Gatepass", home=measured_home, columns=80)
    assert board.returncode == 1
    assert "Datasets with measurements: digits" in " ".join(board.stdout.split())


def test_an_unknown_model_is_reported_once_with_the_closest_names(tmp_path: Path) -> None:
    out = run("evaluate", "--profile", "smoke", "--models", "efficientnet_b9", "--runners", "cpu,edge", home=tmp_path)
    assert out.returncode == 1
    said = out.stdout + out.stderr
    assert said.count("unknown catalog entry 'efficientnet_b9'") == 1, said
    assert "efficientnet_b9 on cpu, edge: failed" in said
    assert "Did you mean 'efficientnet_b4.ra2_in1k'" in said and "convnext_base" not in said
