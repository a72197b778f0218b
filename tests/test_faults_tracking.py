"""Tracking faults with real processes: the MLflow server down for 30 s mid-sweep, and SQLite under many writers."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from registry.settings import Settings
from registry.tracking import DatasetRef, Evaluation
from tests.conftest import free_port
from tests.onnx_models import write_linear

REPO = Path(__file__).resolve().parents[1]
OUTAGE_S = 30.0


def _evaluation(variant: str, artifact: Path, sweep: str) -> Evaluation:
    x = np.ones((1, 4), np.float32)
    return Evaluation(
        variant=variant,
        family="test",
        runner="cpu",
        precision="fp32",
        dataset=DatasetRef("outage", "d" * 64, str(artifact.parent), ("a", "b", "c"), "h" * 64, 3),
        key=f"key-{variant}",
        sweep=sweep,
        fingerprint={"runner": "cpu", "batch_size": "1"},
        fingerprint_id="fp",
        weights_digest="w" * 64,
        weights_source="file",
        artifact=artifact,
        input_example=x,
        output_example=x[:, :3],
        params={"variant": variant},
        metrics={"top1": 0.5, "latency_p95_ms": 1.0, "size_mb": 0.001, "onnx_parity_ok": 1.0},
    )


class Server:
    """``mlflow server`` on a free loopback port with a SQLite backend; can be killed and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.proc: subprocess.Popen | None = None
        self.log = open(root / "server.log", "ab")  # noqa: SIM115

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: gunicorn/uvicorn workers included
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    s = Server(tmp_path)
    try:
        s.start()
    except Exception as exc:
        s.kill()
        pytest.fail(f"cannot start a local mlflow server: {exc}")
    yield s
    s.kill()


@pytest.mark.integration
@pytest.mark.slow
def test_server_down_30s_mid_sweep_loses_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from registry import names
    from registry.tracking import sweep_runs
    from registry.writes import log_evaluation

    monkeypatch.setenv("CNNSELECT_TRACKING_RETRY_SECONDS", "180")  # bounded, and longer than the outage
    settings = Settings(tracking_uri=server.uri)
    artifact = write_linear(tmp_path / "model")
    sweep = "outage-1"
    variants = [f"m{i}" for i in range(3)]
    logged = [log_evaluation(settings, _evaluation(v, artifact, sweep)) for v in variants[:2]]

    results: dict[str, object] = {}

    def rest_of_sweep() -> None:  # the sweep goes on in a worker; the main thread owns the server process
        try:
            results["logged"] = [log_evaluation(settings, _evaluation(v, artifact, sweep)) for v in variants[2:]]
        except Exception as exc:
            results["error"] = exc

    worker = threading.Thread(target=rest_of_sweep)
    worker.start()
    time.sleep(0.5)  # lands in the middle of the next evaluation's logging (or just before it)
    server.kill()
    time.sleep(OUTAGE_S)
    server.start()
    worker.join(timeout=600)
    assert "error" not in results, results.get("error")
    logged += results["logged"]  # type: ignore[operator]

    runs = sweep_runs(settings, "outage", sweep)
    keys = sorted(f"key-{v}" for v in variants)
    assert sorted(r["tags"][names.TAG_KEY] for r in runs) == keys  # exactly one run per key: half-written ones deleted
    assert all(r["status"] == names.STATUS_OK for r in runs)
    assert {r["run_id"] for r in runs} == {lg.run_id for lg in logged}
    client = mlflow.MlflowClient(server.uri)
    versions = client.search_model_versions(f"name = '{names.registered_model_name('outage')}'")  # not deleted
    assert sorted(v.tags[names.TAG_KEY] for v in versions) == keys  # and exactly one version per key
    assert all(v.tags[names.TAG_STATUS] == names.STATUS_OK for v in versions)
    assert sorted(v.version for v in versions) == sorted(lg.version for lg in logged)


def test_server_gone_for_good_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.retry import TrackingUnavailableError
    from registry.tracking import find_finished

    monkeypatch.setenv("CNNSELECT_TRACKING_RETRY_SECONDS", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = Settings(tracking_uri=f"http://u:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(TrackingUnavailableError, match=r"unreachable for 1 s") as info:
        find_finished(settings, "outage", "k1")
    assert "hunter2" not in str(info.value) and "u:***@127.0.0.1" in str(info.value)


WRITER = """
import sys
from registry.settings import Settings
from registry.writes import log_failure
s = Settings(tracking_uri=sys.argv[1])
for i in range(int(sys.argv[3])):
    log_failure(s, "busy", f"w{sys.argv[2]}", "cpu", "test", "parallel writer", f"k{sys.argv[2]}-{i}", "busy-1")
"""


@pytest.mark.slow
def test_many_parallel_writers_on_sqlite_all_land(tmp_path: Path) -> None:
    from registry.tracking import sweep_runs
    from registry.writes import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(tracking_uri=uri)
    ensure_experiment(settings, "busy")  # the schema exists before the writers race
    writers, each = 4, 3
    env = {**os.environ, "PYTHONPATH": str(REPO), "CNNSELECT_TRACKING_RETRY_SECONDS": "120"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, str(i), str(each)], env=env, stderr=subprocess.PIPE)
        for i in range(writers)
    ]
    errors = [p.communicate(timeout=600)[1].decode()[-1500:] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    runs = sweep_runs(settings, "busy", "busy-1")
    assert sorted(r["tags"]["cnnselect.key"] for r in runs) == sorted(
        f"k{w}-{i}" for w in range(writers) for i in range(each)
    )


def test_locked_sqlite_past_the_budget_points_to_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.retry import TrackingStoreBusyError
    from registry.tracking import sweep_runs
    from registry.writes import ensure_experiment, log_failure

    db = tmp_path / "mlflow.db"
    settings = Settings(tracking_uri=f"sqlite:///{db}")
    ensure_experiment(settings, "locked")
    log_failure(settings, "locked", "m0", "cpu", "test", "before the lock", "k0", "lock-1")
    monkeypatch.setenv("CNNSELECT_TRACKING_RETRY_SECONDS", "1")
    settings = Settings(tracking_uri=f"sqlite:///{db}")  # the settings are read when constructed
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holding the store
    try:
        with pytest.raises(TrackingStoreBusyError, match=r"stayed locked(.|\n)*use PostgreSQL"):
            log_failure(settings, "locked", "m1", "cpu", "test", "during the lock", "k1", "lock-1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    keys = [r["tags"]["cnnselect.key"] for r in sweep_runs(settings, "locked", "lock-1")]
    assert keys == ["k0"]  # what was logged before is intact, nothing half-written from the refused call
