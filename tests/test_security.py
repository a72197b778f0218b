"""Security: ONNX external data confined to the model folder, checkpoints parsed in a confined child, names and
filter strings validated, secrets redacted, torch.load only with weights_only=True."""

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.onnx_safety import UnsafeModelError, check_onnx_file
from registry.errors import InvalidNameError
from tests.onnx_models import write_linear

REPO = Path(__file__).resolve().parents[1]


def test_model_with_data_beside_it_loads(tmp_path: Path) -> None:
    from evaluators.runners.cpu import OnnxCpuRunner

    path = write_linear(tmp_path / "ok")
    assert check_onnx_file(path) == [(tmp_path / "ok" / "weights.bin").resolve()]
    runner = OnnxCpuRunner()
    out = runner.predict(runner.load(path), np.ones((2, 4), dtype=np.float32))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "C:\\secret.bin"])
def test_external_data_outside_the_folder_is_refused_before_onnxruntime(tmp_path: Path, location: str) -> None:
    from evaluators.runners.cpu import OnnxCpuRunner

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(12, np.float32).tobytes())  # would "work" if read: the check must stop it first
    path = write_linear(tmp_path / "model", location=location)
    with pytest.raises(UnsafeModelError, match="external data location"):
        check_onnx_file(path)
    with pytest.raises(UnsafeModelError):
        OnnxCpuRunner().load(path)


def test_symlinked_and_hardlinked_data_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(12, np.float32).tobytes())
    path = write_linear(tmp_path / "a")
    (tmp_path / "a" / "weights.bin").unlink()
    (tmp_path / "a" / "weights.bin").symlink_to(secret)
    with pytest.raises(UnsafeModelError, match="symlink"):
        check_onnx_file(path)

    path = write_linear(tmp_path / "b", location="d/weights.bin")
    (tmp_path / "b" / "d").symlink_to(tmp_path)  # a parent-directory symlink (CVE-2026-27489)
    with pytest.raises(UnsafeModelError, match="symlink"):
        check_onnx_file(path)

    path = write_linear(tmp_path / "c")
    (tmp_path / "c" / "weights.bin").unlink()
    os.link(secret, tmp_path / "c" / "weights.bin")  # CVE-2026-34446
    with pytest.raises(UnsafeModelError, match="hardlink"):
        check_onnx_file(path)

    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(UnsafeModelError, match="not a readable ONNX model"):
        check_onnx_file(tmp_path / "junk.onnx")


def test_every_torch_load_passes_weights_only_true() -> None:
    calls = []
    for pkg in ("catalog", "evaluators", "registry", "cnnselect"):
        for py in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    calls.append((py.name, node.lineno, ok))
    assert calls, "expected catalog/weights.py to call torch.load"
    assert all(ok for *_, ok in calls), calls


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {os.environ['CNNSELECT_EVIL_MARK']}",))


def test_checkpoint_parsed_in_child_refuses_pickled_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.weights import WeightsError, read_state_dict_isolated

    mark = tmp_path / "pwned"
    monkeypatch.setenv("CNNSELECT_EVIL_MARK", str(mark))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(WeightsError, match="refusing to load"):
        read_state_dict_isolated(evil)
    assert not mark.exists()

    good = tmp_path / "good.pt"
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    torch.save(state, good)
    back = read_state_dict_isolated(good)
    assert set(back) == {"a", "b"} and torch.equal(back["a"], state["a"])


def test_checkpoint_child_has_time_and_memory_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog.weights import LoadLimits, WeightsError, _child_env, read_state_dict_isolated

    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(3)}, good)
    with pytest.raises(WeightsError, match="longer than 0.01 s"):
        read_state_dict_isolated(good, LoadLimits(timeout_s=0.01))
    with pytest.raises(WeightsError, match="memory limit 256 MiB"):
        read_state_dict_isolated(good, LoadLimits(memory_mb=256))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = _child_env()
    assert "MLFLOW_TRACKING_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env and "PATH" in env


def test_names_reaching_paths_and_filters_are_validated(digits_root: Path) -> None:
    from catalog import get_profile
    from cnnselect.pipeline import evaluate_model
    from registry.settings import Settings
    from registry.tracking import filter_literal, find_finished, sweep_runs

    with pytest.raises(InvalidNameError, match="invalid model name"):
        evaluate_model("../../etc", get_profile("smoke"), digits_root, ("cpu",), "s1")
    with pytest.raises(InvalidNameError, match="MLflow filter"):
        evaluate_model("test_resnet.r160_in1k", get_profile("smoke"), digits_root, ("cpu",), "x' or '1'='1")
    with pytest.raises(InvalidNameError):
        sweep_runs(Settings(), "digits", "s' OR tags.x != '")
    with pytest.raises(InvalidNameError):
        find_finished(Settings(), "digits", "k`")
    with pytest.raises(InvalidNameError, match="invalid dataset name"):
        sweep_runs(Settings(), "../x", "s1")
    assert filter_literal("sweep id", "manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00:00:00+00:00"


def test_secrets_are_redacted() -> None:
    from registry.retry import redact

    assert redact("postgresql://cnn:hunter2@db:5432/mlflow") == "postgresql://cnn:***@db:5432/mlflow"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert "hunter2" not in redact("http://u:hunter2@mlflow:5000")
