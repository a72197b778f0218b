from pathlib import Path

import numpy as np
import pytest
import torch

from catalog import UnknownNameError, get_entry
from catalog.weights import create_model
from evaluators.export import ExportError, check_parity, export_onnx
from evaluators.runners import RUNNER_NAMES, get_runner


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = create_model(get_entry("test_resnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(0).normal(size=(20, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp_path_factory.mktemp("onnx"))
    return model, art, x


def test_export_counts_every_file(model_and_onnx) -> None:
    _, art, _ = model_and_onnx
    assert art.path.name == "model.onnx"
    assert art.bytes == sum(p.stat().st_size for p in art.path.parent.iterdir())
    assert art.bytes > art.path.stat().st_size or len(art.files) == 1


def test_cpu_runner_matches_torch(model_and_onnx) -> None:
    model, art, x = model_and_onnx
    r = get_runner("cpu")
    assert r.availability().available
    logits = r.predict(r.load(r.prepare(art.path, art.path.parent, None)), x)  # dynamic batch: 20
    parity = check_parity(model, logits, x)
    assert parity.ok and parity.max_abs_diff < 1e-3


def test_parity_detects_a_wrong_artifact(model_and_onnx) -> None:
    model, _, x = model_and_onnx
    assert not check_parity(model, np.zeros((len(x), 10), np.float32), x).ok


def test_edge_runner_quantizes_and_stays_close(model_and_onnx, tmp_path: Path) -> None:
    model, art, x = model_and_onnx
    r = get_runner("edge")
    int8 = r.prepare(art.path, tmp_path, x)
    assert int8.stat().st_size < art.bytes / 2  # int8 weights
    logits = r.predict(r.load(int8), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.8
    fp = r.fingerprint(1, 32)
    assert fp["precision"] == "int8" and fp["threads"] == "1" and "quantization" in fp and fp["cpu_isa"]


def test_edge_runner_needs_calibration(model_and_onnx, tmp_path: Path) -> None:
    _, art, _ = model_and_onnx
    with pytest.raises(ValueError, match="calibration"):
        get_runner("edge").prepare(art.path, tmp_path, None)


def test_unknown_runner_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="Available: cpu, edge"):
        get_runner("tpu")
    assert set(RUNNER_NAMES) >= {"cpu", "edge"}


def test_export_failure_is_typed(tmp_path: Path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[0, 0]).real.unsqueeze(0)  # no ONNX operator for eigvals

    with pytest.raises(ExportError, match="ONNX export failed"):
        export_onnx(Unexportable(), np.zeros((1, 3, 8, 8), np.float32), tmp_path)
