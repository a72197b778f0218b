"""The installed ``cnnselect`` command, run as a user would: exit codes and --json output a script can rely on."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CLI = str(Path(sys.executable).parent / "cnnselect")


def run(*args: str, home: Path, columns: int = 200) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNNSELECT_HOME": str(home), "COLUMNS": str(columns)}
    return subprocess.run([CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_catalog_list_json(tmp_path: Path) -> None:
    out = run("catalog", "list", "--json", home=tmp_path)
    assert out.returncode == 0
    rows = json.loads(out.stdout)
    assert {r["family"] for r in rows} >= {"resnet", "efficientnet", "efficientnet_lite", "mobilenetv3", "vit"}


@pytest.mark.slow
def test_evaluate_survives_a_bad_model_then_answers(tmp_path: Path) -> None:
    out = run(
        "evaluate",
        "--profile",
        "smoke",
        "--models",
        "test_resnet.r160_in1k,resnet81",
        "--runners",
        "cpu",
        "--json",
        home=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = {r["variant"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])["results"]}
    assert results["test_resnet.r160_in1k"]["status"] == "ok"
    assert results["resnet81"]["status"] == "failed" and results["resnet81"]["stage"] == "resolve"
    assert "Did you mean 'resnet18" in results["resnet81"]["error"]

    best = run("best", "--target", "cpu", "--max-latency-ms", "1000", "--json", home=tmp_path)
    assert best.returncode == 0, best.stdout + best.stderr
    assert json.loads(best.stdout)["variant"] == "test_resnet.r160_in1k"

    none = run("best", "--max-params-m", "0.0001", "--json", home=tmp_path)
    assert none.returncode == 3
    assert json.loads(none.stdout)["error"] == "NoFeasibleModelError" and "max_params_m" in none.stdout

    board = run("leaderboard", "--json", home=tmp_path)
    assert [r["variant"] for r in json.loads(board.stdout)] == ["test_resnet.r160_in1k"]

    cards = run("add-cards", "--prune", "--json", home=tmp_path)  # registered with its card and its few tags only
    assert cards.returncode == 0 and json.loads(cards.stdout) == {
        "dataset": "digits",
        "cards_written": 0,
        "tags_deleted": 0,
    }


def test_bad_constraints_exit_2_and_list_valid_runners(tmp_path: Path) -> None:
    out = run("best", "--target", "tpu", home=tmp_path)
    assert out.returncode == 2 and "known runners: cpu, edge" in out.stdout
    out = run("best", "--target", "cpu-host", "--runtimes", "cpu,openvino", home=tmp_path)
    flat = " ".join(out.stdout.split())
    assert out.returncode == 2 and "unknown cpu-host runtime 'openvino'" in flat and "Valid: cpu, edge" in flat


def test_best_on_a_host_names_the_runtime_precision_threads_and_host(measured_home: Path) -> None:
    """cpu and edge measured on one machine: the host target weighs both, the answer says which runtime won."""
    from evaluators.runners import runner_host_id

    host = runner_host_id("cpu", {"cpu": "x"})
    a = json.loads(run("best", "--target", "cpu-host", "--max-latency-ms", "3", "--json", home=measured_home).stdout)
    assert (a["variant"], a["runtime"], a["precision"], a["threads"], a["host"]) == ("mid", "edge", "int8", "all", host)
    assert {v["runtime"] for v in a["verdicts"]} == {"cpu", "edge"}
    pinned = run("best", "--target", "cpu-host", "--runtimes", "cpu", "--max-latency-ms", "3", "--json",
                 home=measured_home)  # fmt: skip
    assert (json.loads(pinned.stdout)["variant"], json.loads(pinned.stdout)["runtime"]) == ("fast", "cpu")
    out = run("best", "--target", "cpu-host", "--max-latency-ms", "3", home=measured_home, columns=100)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert f"runtime edge, precision int8, threads all, host {host}" in out.stdout
    assert "mid v6 edge" in out.stdout and "mid v2 cpu" in out.stdout  # each candidate named with its runtime


def test_nothing_evaluated_exits_1(tmp_path: Path) -> None:
    out = run("evaluate", "--profile", "smoke", "--models", "nope_net", "--runners", "cpu", home=tmp_path)
    assert out.returncode == 1
    assert "unknown catalog entry 'nope_net'" in out.stdout


def test_dataset_without_classes_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "heldout").mkdir(parents=True)
    out = run("evaluate", "--dataset", str(tmp_path / "data"), "--profile", "smoke", home=tmp_path)
    assert out.returncode == 2 and "heldout has no class folders" in out.stdout.replace("\n", "")


@pytest.mark.slow
def test_user_imagefolder_with_a_broken_image(tmp_path: Path, digits_root: Path) -> None:
    data = tmp_path / "pets"
    for split in ("train", "calibration", "heldout"):
        for cls, name in (("1", "cat"), ("7", "dog")):
            shutil.copytree(digits_root / split / cls, data / split / name)
    (data / "heldout" / "cat" / "corrupt.png").write_bytes(b"not an image")
    args = ("--profile", "smoke", "--models", "test_efficientnet.r160_in1k", "--runners", "cpu,edge", "--json")
    out = run("evaluate", "--dataset", str(data), *args, home=tmp_path)
    # a broken image is quarantined by name and the sweep goes on (the gate fails only for an unusable split)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["dataset"]["classes"] == 2 and payload["dataset"]["gate"]["success"]
    assert "cannot decode image heldout/cat/corrupt.png" in payload["dataset"]["quarantined"]["heldout/cat/corrupt.png"]
    assert "quarantined heldout/cat/corrupt.png" in out.stderr
    assert [r["status"] for r in payload["results"]] == ["ok", "ok"]
    assert not any(p.name.endswith(".json") for p in data.iterdir())  # the manifest lives in CNNSELECT_HOME
    summary = run("data", str(data), "--json", home=tmp_path)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "heldout/cat/corrupt.png" in json.loads(summary.stdout)["splits"]["heldout"]["quarantined"]
    # deleting a file is a new dataset digest: measured again, no stale-manifest crash, no "already measured"
    (data / "heldout" / "cat" / "corrupt.png").unlink()
    victim = sorted((data / "heldout" / "dog").glob("*.png"))[0]
    victim.unlink()
    again = run("evaluate", "--dataset", str(data), *args, home=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["dataset"]["digest"] != payload["dataset"]["digest"] and second["dataset"]["quarantined"] == {}
    assert [r["status"] for r in second["results"]] == ["ok", "ok"]


@pytest.mark.slow
def test_a_model_killed_for_memory_fails_alone_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """The kernel's OOM killer sends SIGKILL: done here to the first model's process, as the kernel would."""
    import signal
    import time

    import psutil

    env = {**os.environ, "CNNSELECT_HOME": str(tmp_path), "COLUMNS": "200"}
    args = ["evaluate", "--profile", "smoke", "--models", "test_resnet.r160_in1k,test_efficientnet.r160_in1k"]
    cli = subprocess.Popen(
        [CLI, *args, "--runners", "cpu", "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and cli.poll() is None:
        for child in psutil.Process(cli.pid).children(recursive=True):
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    child.send_signal(signal.SIGKILL)
                    killed = child.pid
                    break
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    stdout, stderr = cli.communicate(timeout=600)
    assert killed is not None, "the model never ran in a process of its own"
    assert cli.returncode == 0, stderr.decode()[-3000:]
    results = {r["variant"]: r for r in json.loads(stdout.decode().strip().splitlines()[-1])["results"]}
    first, second = results["test_resnet.r160_in1k"], results["test_efficientnet.r160_in1k"]
    assert first["status"] == "failed" and first["stage"] == "memory" and first["run_id"]
    assert "killed by SIGKILL" in first["error"] and "out-of-memory" in first["error"]
    assert second["status"] == "ok"  # the next model ran
