"""Each model's runtime/precision frontier per host, on hand-made candidates, then in the leaderboard and the report."""

from __future__ import annotations

import json
from pathlib import Path

from cnnselect.frontier import runtime_frontiers
from registry.selection import Candidate
from tests.cnnselect.test_cli import run


def _c(variant: str, runner: str, top1: float, p95: float, host: str = "cpu-a", version: int = 1, **kw) -> Candidate:
    return Candidate(
        "m", str(version), f"r{version}", variant, "resnet", runner, "fp32", "fp",
        {"top1": top1, "latency_p95_ms": p95}, host=host, created_ms=version, **kw,
    )  # fmt: skip


def test_dominated_runtimes_are_off_the_frontier_and_the_fastest_leads() -> None:
    cands = [
        _c("r18", "cpu", 0.90, 20.0, version=1),
        _c("r18", "openvino-int8", 0.89, 2.0, version=2),
        _c("r18", "openvino-bf16", 0.90, 3.4, version=3),
        _c("r18", "edge", 0.88, 6.5, version=4),  # slower and less accurate than openvino-int8
        _c("r18", "openvino-fp32", 0.90, 19.0, version=5),  # as accurate as bf16 and slower
    ]
    arts = runtime_frontiers(cands)["cpu-a"]["r18"]
    assert [a.candidate.runner for a in arts] == ["openvino-int8", "openvino-bf16", "edge", "openvino-fp32", "cpu"]
    assert [a.candidate.runner for a in arts if a.on_frontier] == ["openvino-int8", "openvino-bf16"]
    assert [a.fastest for a in arts] == [True, False, False, False, False]


def test_one_point_per_runner_and_threads_at_its_newest_and_hosts_apart() -> None:
    cands = [
        _c("r18", "cpu", 0.90, 5.0, version=1),
        _c("r18", "cpu", 0.91, 20.0, version=2),  # the newer measurement of cpu replaces the older one
        _c("r18", "cpu", 0.91, 9.0, version=3, threads="1"),  # another thread count is another artifact
        _c("r18", "edge", 0.88, 4.0, host="cpu-b", version=4),  # another machine
        _c("r18", "edge", 0.88, 4.0, host="", version=5),  # no host id: left out
    ]
    f = runtime_frontiers(cands)
    assert sorted(f) == ["cpu-a", "cpu-b"]
    a = f["cpu-a"]["r18"]
    assert [(x.candidate.version, x.candidate.threads, x.on_frontier) for x in a] == [
        ("3", "1", True),
        ("2", "all", False),
    ]
    assert [x.candidate.version for x in f["cpu-b"]["r18"]] == ["4"]


def test_leaderboard_shows_each_models_frontier_on_its_host(measured_home: Path) -> None:
    from evaluators.runners import runner_host_id

    host = runner_host_id("cpu", {"cpu": "x"})
    rows = json.loads(run("leaderboard", "--json", home=measured_home).stdout)
    mid = {r["runner"]: r for r in rows if r["variant"] == "mid"}
    # mid on edge (2.5 ms, 0.88) and on cpu (3.0 ms, 0.90): neither beats the other, edge is the faster
    assert {r: (x["host"], x["on_frontier"], x["fastest_on_host"]) for r, x in mid.items()} == {
        "edge": (host, True, True),
        "cpu": (host, True, False),
    }
    text = run("leaderboard", home=measured_home, columns=100).stdout
    assert f"Runtime frontier: digits on host {host}" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Runtime frontier" in line)
    body = [line for line in lines[start:] if "│" in line]
    assert any("mid" in line and "edge, all" in line and "2.50" in line for line in body), body
    assert any("cpu, all" in line and "3.00" in line for line in body), body
