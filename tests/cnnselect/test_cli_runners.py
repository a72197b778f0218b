"""``cnnselect runners``: every registered runner listed once, with its precision and why it cannot run here."""

import json

import pytest

from cnnselect.cli import main
from evaluators.runners import RUNNER_NAMES, RUNNER_PRECISION, get_runner


def test_runners_json_lists_every_runner_with_its_availability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runners", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(RUNNER_NAMES)
    by_name = {r["name"]: r for r in rows}
    assert by_name["openvino-bf16"]["precision"] == "bf16" and by_name["executorch-xnnpack-int8"]["precision"] == "int8"
    for r in rows:
        assert r["available"] == get_runner(r["name"]).availability().available
        assert r["precision"] == RUNNER_PRECISION[r["name"]]  # the declaration (_SPECS) says what the runner runs
        assert r["host"] == ("gpu-host" if r["name"].startswith("gpu") else "cpu-host")
        assert r["available"] or r["reason"], f"{r['name']} is unavailable without a reason"
    assert by_name["cpu"]["available"]


def test_a_failing_availability_check_is_listed_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from evaluators.runners.openvino import OpenVinoRunner

    def broken(self: OpenVinoRunner) -> None:
        raise OSError("libopenvino.so: cannot open shared object file")

    monkeypatch.setattr(OpenVinoRunner, "availability", broken)
    assert main(["runners", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert not rows["openvino-fp32"]["available"]
    assert "OSError" in rows["openvino-fp32"]["reason"] and "libopenvino" in rows["openvino-fp32"]["reason"]
    assert rows["cpu"]["available"]


def test_runners_table_keeps_the_install_hint_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runners"]) == 0
    out = capsys.readouterr().out
    for name in RUNNER_NAMES:
        assert name in out
    if not get_runner("litert-fp32").availability().available:
        assert "cnnselect[litert]" in out.replace("\n", "")  # rich markup must not eat the extra's brackets
