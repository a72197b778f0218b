"""``cnnselect.celery_worker``: a worker that preloads the measuring stack, then forks a task as Airflow does.

The task, a real job on two runners in the forked child, must succeed (forking after the preload is safe), start no
heavy package of its own (the preload imports each package a measuring task uses; the task may still import a few of
their submodules lazily) and log its models without making MLflow's package map again.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "mlflow",
    "great_expectations",
    "pandas",
    "sklearn",
    "scipy",
    "sympy",
    "networkx",
}

WORKER = r"""
import json, os, sys, traceback

import cnnselect.celery_worker as worker  # the worker's main process, before its pool forks
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

assert worker.CELERY_CONFIG == DEFAULT_CELERY_CONFIG
before = {m.split(".")[0] for m in sys.modules}
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the task process, forked as Airflow's task supervisor forks it
    try:
        from catalog import get_profile
        from cnnselect.pipeline import evaluate_model
        from evaluators.latency import LatencySettings
        from registry.settings import Settings
        from mlflow.utils import requirements_utils

        scans = []  # MLflow reading every installed distribution to map it to its modules (its package map)
        scan = requirements_utils.importlib_metadata.packages_distributions
        requirements_utils.importlib_metadata.packages_distributions = lambda: scans.append(1) or scan()
        fast = LatencySettings(warmup=2, min_iters=20, min_seconds=0.0, large_batch=0)
        outs = evaluate_model("test_resnet.r160_in1k", get_profile("smoke"), sys.argv[1], ("cpu", "edge"), "w1",
                              "scratch", Settings(home=sys.argv[2]), latency=fast)
        new = sorted({m.split(".")[0] for m in sys.modules} - before)  # packages the task started
        result = {"outcomes": [o.to_dict() for o in outs], "new": new, "package_maps": len(scans)}
    except BaseException:
        result = {"error": traceback.format_exc()}
    os.write(write, json.dumps(result, default=str).encode())
    os._exit(0)
os.close(write)
chunks = []
while chunk := os.read(read, 1 << 16):
    chunks.append(chunk)
os.waitpid(pid, 0)
print("RESULT", b"".join(chunks).decode())
"""


@pytest.mark.slow
def test_a_task_forked_from_a_preloaded_worker_runs_and_imports_nothing_heavy(
    digits_root: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(digits_root), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stderr[-3000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert "error" not in result, result.get("error")
    assert [(o["runner"], o["status"]) for o in result["outcomes"]] == [("cpu", "ok"), ("edge", "ok")], result
    assert not HEAVY & set(result["new"]), f"imported by the task, not preloaded: {sorted(HEAVY & set(result['new']))}"
    assert result["package_maps"] == 0  # MLflow's package map, made by the preload, is inherited by the task
