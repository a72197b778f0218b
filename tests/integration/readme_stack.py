"""The README's own commands, run in a fresh clone of this checkout: `make airflow`, `make ui-mlflow`.

The clone gets this checkout's virtualenv (a link: `make` in a clean clone builds the same one, minutes of pip the
tests do not repeat) and imports its own code (``PYTHONPATH``: what an editable install of the clone would import),
so its data lands in the clone's own ``.cnnselect/`` as a user's would. Ports are the test's own, through the
Makefile's ``AIRFLOW_PORT`` / ``MLFLOW_PORT``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO, free_port
from tests.integration.stack import Proc, http, http_ok, wait_for


@dataclass
class Clone:
    path: Path
    env: dict[str, str]
    targets: list[Proc] = field(default_factory=list)

    def make(self, target: str, *variables: str) -> Proc:
        log = self.path.parent / f"make-{target}.log"
        fh = open(log, "wb")  # noqa: SIM115 - make writes to it until stop()
        proc = subprocess.Popen(
            ["make", target, *variables], cwd=self.path, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        t = Proc(target, proc, log)  # the stack's own process handle: tail, stop by process group
        self.targets.append(t)
        return t

    def stop(self) -> None:
        for t in reversed(self.targets):
            t.stop()


def fresh_clone(root: Path) -> Clone:
    path = root / "cnnselect"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    (path / ".venv").symlink_to(REPO / ".venv")
    stamp = (REPO / ".venv" / ".installed").stat().st_mtime
    os.utime(path / "pyproject.toml", (stamp - 60, stamp - 60))  # the linked venv is up to date: make installs nothing
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "CNNSELECT", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)  # not on PATH: make's job
    env["PYTHONPATH"] = str(path)
    # Airflow's log servers have fixed ports; the test's own, beside whatever else runs on this machine
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
    hour = time.gmtime().tm_hour
    if hour in (2, 3):  # within the default 03:00 cron's grace: its run would start a real nightly sweep
        env["CNNSELECT_EVALUATION_SCHEDULE"] = "0 15 * * *"
    return Clone(path, env)


def start_airflow(clone: Clone) -> tuple[Proc, str]:
    port = free_port()
    target = clone.make("airflow", f"AIRFLOW_PORT={port}")
    url = f"http://127.0.0.1:{port}"
    wait_for(f"`make airflow` at {url}", lambda: http("GET", f"{url}/api/v2/monitor/health"), 420, [target], every=3)
    return target, url


def start_mlflow_ui(clone: Clone) -> tuple[Proc, str]:
    port = free_port()
    target = clone.make("ui-mlflow", f"MLFLOW_PORT={port}")
    url = f"http://127.0.0.1:{port}"
    wait_for(f"`make ui-mlflow` at {url}", lambda: http_ok(f"{url}/health"), 300, [target], every=3)
    return target, url
