"""The production topology as plain processes on loopback: the same commands docker-compose.yml runs."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port

BIN = Path(sys.executable).parent


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bool(resp.status == 200)


def wait_for(what: str, check: Any, timeout: float, procs: list[Any] | None = None, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for p in procs or []:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
        try:
            got = check()
            if got:
                return got
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last})")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    airflow_url: str
    mlflow_url: str
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Proc:
        log = self.root / f"{name}.log"
        fh = open(log, "wb")  # noqa: SIM115 - the child process writes to it until stop()
        proc = subprocess.Popen(
            list(argv),
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    def start_mlflow_server(self, backend_store_uri: str) -> Proc:
        """`mlflow server` with served artifacts under ``root/mlartifacts``, as docker-compose.yml runs it."""
        return self.start(
            "mlflow",
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(self.root / "mlartifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            self.mlflow_url.rsplit(":", 1)[1],
            "--workers",
            "1",
        )

    def run(self, *argv: str, timeout: float = 600) -> str:
        out = subprocess.run(list(argv), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{argv} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out.stdout

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def init_airflow(self) -> None:
        """Migrate the metadata DB and create the pools the DAGs name, as airflow-init does."""
        self.run(str(BIN / "airflow"), "db", "migrate")
        for pool in POOLS:
            self.run(str(BIN / "airflow"), "pools", "set", pool, "1", "cnnselect host pool")

    def token(self) -> str:
        return str(http("GET", f"{self.airflow_url}/auth/token")["access_token"])


POOLS = ("cnnselect-cpu-host", "cnnselect-gpu-host")  # what airflow-init creates in docker-compose.yml


def local_stack(root: Path, extra_env: dict[str, str]) -> Stack:
    """Loopback ports, a clean environment and the settings every deployment here shares, plus its own."""
    api_port, ml_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "CNNSELECT"))}
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "CNNSELECT_EVALUATION_SCHEDULE": "none",  # no scheduled run competing with the test's manual one
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "true",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "1800",
            "CNNSELECT_HOME": str(root / "cnnselect"),
            "CNNSELECT_LATENCY_LOCK": str(root / "latency.lock"),
            # the stack's own processes share the cores: pass the suite's gate setting on (tests/conftest.py says why)
            "CNNSELECT_GATE_MAX_LATENCY_COV": os.environ.get("CNNSELECT_TEST_GATE_MAX_LATENCY_COV", "1e9"),
        }
    )
    env.update({k: v.format(ml_port=ml_port) for k, v in extra_env.items()})
    (root / "airflow").mkdir(parents=True, exist_ok=True)
    return Stack(root, env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ml_port}")


# what docker-compose.yml sets on its Celery workers, and only on them (tests/test_compose.py checks that file)
PRELOAD = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "cnnselect.celery_worker.CELERY_CONFIG"}


def celery_stack(root: Path, airflow_db: str, broker: str) -> Stack:
    """PostgreSQL metadata DB, CeleryExecutor on Redis; tasks log to the stack's `mlflow server`."""
    return local_stack(
        root,
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:{ml_port}",
            "CNNSELECT_QUEUES": "default,edge",  # the two workers' queues, as docker-compose.yml sets it
        },
    )
