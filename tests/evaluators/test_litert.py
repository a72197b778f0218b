"""LiteRT for real: conversion, parity and accuracy from the ``.tflite``, and the pipeline end to end, in .venv-litert.

LiteRT's converter cannot share the Airflow venv (``make litert`` says why), so these tests run its code in the venv
``make litert`` builds (``make test`` builds it first), exactly as a LiteRT worker would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, service_missing

LITERT_VENV = REPO / ".venv-litert"


@pytest.fixture(scope="module")
def litert_python() -> Path:
    python = LITERT_VENV / "bin" / "python"
    if not (LITERT_VENV / ".installed").exists():
        service_missing("the LiteRT venv", f"{LITERT_VENV} is not built: run `make litert`")
    return python


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.mark.parametrize("name", ["test_resnet.r160_in1k", "test_efficientnet.r160_in1k"])
def test_litert_converts_and_matches_torch(litert_python: Path, name: str) -> None:
    out = _run([str(litert_python), "-m", "tests.evaluators.litert_parity", name, "32"])
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    fp32, int8 = res["litert-fp32"], res["litert-int8"]
    assert fp32["artifact"] == int8["artifact"] == "model.tflite"
    assert fp32["max_abs"] < 1e-4 and fp32["agree"] == 1.0  # FP32: the same function as torch
    assert fp32["top1"] == 0.75  # recomputed from the artifact: the four wrong labels count
    assert int8["corr"] > 0.98 and int8["agree"] >= 0.8  # INT8: close, not identical
    assert fp32["int8_tensors"] == 0 and int8["int8_tensors"] > 10  # int8 weights and activations
    # (not compared by file size: timm zero-initialises each block's last BN gamma, so LiteRT's converter folds
    # scratch-initialised FP32 residual branches away; ResNet-18's FP32 .tflite is 0.76 MB, its INT8 one 8 MB)
    for r in (fp32, int8):
        assert r["dtype"] == "float32"  # int8 tensors are quantized in and dequantized out by the runner
        assert r["fingerprint"]["measured_on"] == "host" and r["fingerprint"]["ai_edge_litert"] != "absent"


@pytest.mark.slow
def test_litert_pipeline_end_to_end_and_best_on_the_host(litert_python: Path, tmp_path: Path) -> None:
    """`.venv-litert/bin/cnnselect evaluate` logs both runners; `best --target cpu-host` there loads the .tflite."""
    cli = str(LITERT_VENV / "bin" / "cnnselect")
    env = {"CNNSELECT_HOME": str(tmp_path), "COLUMNS": "200"}
    ev = _run(
        [cli, "evaluate", "--profile", "smoke", "--models", "test_resnet.r160_in1k", "--weights", "scratch",
         "--runners", "litert-fp32,litert-int8", "--json"], **env,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    outs = {o["runner"]: o for o in json.loads(ev.stdout)["results"]}
    assert {r: o["status"] for r, o in outs.items()} == {"litert-fp32": "ok", "litert-int8": "ok"}, outs
    best = _run([cli, "best", "--target", "cpu-host", "--runtimes", "litert-fp32,litert-int8", "--json"], **env)
    assert best.returncode == 0, best.stdout[-3000:]
    a = json.loads(best.stdout)
    assert a["runtime"] in ("litert-fp32", "litert-int8") and a["host"]
    load = _run(
        [str(litert_python), "-c",
         "import json,sys; import numpy as np; from registry.client import Registry; from registry.constraints import "
         "Constraints; a = Registry().get_best(Constraints(target='cpu-host', runtimes=['litert-fp32','litert-int8']));"
         " y = a.predict(np.zeros((1, 3, 32, 32), np.float32)); print(json.dumps([a.runtime, list(y.shape)]))"],
        **env,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr[-3000:]
    runtime, shape = json.loads(load.stdout.strip().splitlines()[-1])
    assert runtime == a["runtime"] and shape == [1, 10]
