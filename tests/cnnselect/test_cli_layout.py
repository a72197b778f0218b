"""What ``cnnselect`` prints for people at 80 columns: whole model names, bounds named as bounds, brackets kept."""

from __future__ import annotations

import json
from pathlib import Path

from cnnselect.views import wrap
from tests.cnnselect.conftest import LONG_NAMES
from tests.cnnselect.test_cli import run


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_leaderboard_at_80_columns_shows_every_name_whole(long_names_home: Path) -> None:
    out = run("leaderboard", home=long_names_home, columns=80)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert max(len(line) for line in _lines(out.stdout)) <= 80
    assert "…" not in out.stdout
    for name in LONG_NAMES.values():
        assert any(name in line for line in _lines(out.stdout)), name  # whole, on one line
    assert "Leaderboard: digits on cpu/fp32" in out.stdout and "Leaderboard: digits on edge/int8" in out.stdout
    assert "left out at 80 columns: GMACs, params M" in out.stdout  # named, not silently cut
    row = next(line for line in _lines(out.stdout) if LONG_NAMES["mid"] in line and "0.900" in line)
    assert "3.00" in row  # p95 ms and size MB of mid on cpu stay
    wide = run("leaderboard", home=long_names_home, columns=200)
    assert "GMACs" in wide.stdout and "left out" not in wide.stdout


def test_best_at_80_columns_names_the_bound_and_keeps_names_whole(long_names_home: Path) -> None:
    out = run("best", "--min-top1", "0.8", "--max-latency-ms", "5", home=long_names_home, columns=80)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    text = out.stdout
    assert max(len(line) for line in _lines(text)) <= 80
    assert f"{LONG_NAMES['mid']} models:/cnnselect-digits/2" in text
    for variant in ("mid", "big", "slowbad", "fast"):
        assert f"{LONG_NAMES[variant]} v" in text
    flat = " ".join(line.strip("│ ") for line in _lines(text))
    # the lower bound is named as one, beside its point estimate; never "top1=0.88" as if it were the measurement
    assert "top1 ≥ 0.88 (95% lower bound; point 0.9)" in flat
    assert "top1=0.88" not in flat
    assert "latency_p95_ms ≤ 9.45 (95% upper bound; point 9) fails 5 (margin -89.0%)" in flat
    for kept in ("(margin -89.0%)", "(margin -26.0%)", "≥ 0.78", "≤ 3.15"):
        assert any(kept in line for line in _lines(text)), kept  # a figure is never broken across lines
    assert "chosen" in text and "infeasible" in text and "marginal" in text
    # names too long for a column of their own beside the checks: each name on its line, the checks at full width
    assert any("latency_p95_ms ≤ 9.45 (95% upper bound; point 9) fails 5" in line for line in _lines(text))
    assert any(line.strip("│ ").startswith(f"{LONG_NAMES['mid']} v2 chosen") for line in _lines(text))
    payload = json.loads(
        run("best", "--min-top1", "0.8", "--max-latency-ms", "5", "--json", home=long_names_home).stdout
    )
    assert [v["label"] for v in payload["verdicts"]] == ["chosen", "infeasible", "infeasible", "marginal"]
    assert "[feasible]" in payload["explanation"]


def test_bracketed_text_survives(long_names_home: Path, tmp_path: Path) -> None:
    out = run("best", "--families", "[resnet]", home=long_names_home, columns=80)
    assert out.returncode == 2 and "unknown family '[resnet]'" in out.stdout.replace("\n", " ")
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "cam.yaml").write_text("name: cam\ndescription: edge camera [beta] saw [4.0, 4.0]\nconstraints: {}\n")
    out = run("teams", "validate", "--teams-dir", str(teams), home=long_names_home, columns=80)
    assert out.returncode == 0 and "edge camera [beta] saw [4.0, 4.0]" in out.stdout


def test_wrap_breaks_between_figures_only() -> None:
    clause = "min_top1: top1 ≥ 0.878 (95% lower bound; point 0.907) meets 0.8 (margin +9.8%)"
    for width in range(20, 80):
        lines = wrap(clause, width)
        assert " ".join(line.strip() for line in lines) == clause
        assert all(len(line) <= width for line in lines), (width, lines)
        for figure in ("≥ 0.878", "95% lower", "point 0.907)", "meets 0.8", "(margin +9.8%)"):
            assert any(figure in line for line in lines), (width, figure, lines)
