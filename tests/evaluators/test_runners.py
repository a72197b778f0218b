import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from catalog import UnknownNameError, get_entry
from catalog.weights import create_model
from evaluators.export import ExportError, OnnxArtifact, check_parity, export_onnx
from evaluators.runners import RUNNER_NAMES, PeakMemory, RunnerUnavailableError, artifact_files, get_runner
from evaluators.runners.base import ArrayCalibration
from evaluators.runners.torch_cpu import TorchArtifactError, save_torch_artifact


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
    assert art.bytes == sum(p.stat().st_size for p in art.path.parent.iterdir() if p.name.startswith("model.onnx"))
    assert art.bytes > art.path.stat().st_size or len(art.files) == 1


@pytest.fixture
def with_torch_artifact(model_and_onnx, tmp_path: Path):
    """The ONNX export copied to a fresh folder, the torch artifact saved beside it (as the pipeline does)."""
    model, art, x = model_and_onnx
    for f in art.files:
        shutil.copy(f, tmp_path / f.name)
    save_torch_artifact(model, "test_resnet.r160_in1k", 10, tmp_path)
    return model, tmp_path / art.path.name, x


def test_torch_cpu_runner_rebuilds_the_model_from_its_artifact(with_torch_artifact) -> None:
    model, onnx_path, x = with_torch_artifact
    r = get_runner("torch-cpu")
    assert r.availability().available
    artifact = r.prepare(onnx_path, onnx_path.parent, None)
    assert {p.name for p in artifact_files(artifact)} == {"torch_model.json", "weights.safetensors"}
    assert OnnxArtifact(onnx_path).bytes == sum(p.stat().st_size for p in onnx_path.parent.glob("model.onnx*"))
    logits = r.predict(r.load(artifact), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    fp = r.fingerprint(8, 32)
    assert fp["provider"] == "torch-eager-cpu" and fp["batch_size"] == "8" and fp["torch"] == torch.__version__


def test_torch_runner_names_the_missing_artifact(model_and_onnx, tmp_path: Path) -> None:
    _, art, _ = model_and_onnx
    shutil.copy(art.path, tmp_path / "model.onnx")
    with pytest.raises(TorchArtifactError, match="torch_model.json"):
        get_runner("torch-cpu").prepare(tmp_path / "model.onnx", tmp_path, None)


def test_torch_artifact_refuses_changed_weights(with_torch_artifact) -> None:
    _, onnx_path, _ = with_torch_artifact
    weights = onnx_path.parent / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = get_runner("torch-cpu")
    with pytest.raises(TorchArtifactError, match="sha256"):
        r.load(r.prepare(onnx_path, onnx_path.parent, None))


@pytest.mark.parametrize("name", ["gpu", "gpu-bf16"])
def test_torch_gpu_runner_availability_follows_cuda(name: str, with_torch_artifact) -> None:
    _, onnx_path, _ = with_torch_artifact
    r = get_runner(name)
    avail = r.availability()
    if torch.cuda.is_available():
        return  # the gpu-marked tests below measure it
    assert not avail.available and "torch.cuda.is_available() is False" in avail.reason
    with pytest.raises(RunnerUnavailableError, match=name):
        r.load(r.prepare(onnx_path, onnx_path.parent, None))  # nothing falls back to the CPU
    fp = r.fingerprint(1, 32)
    assert fp["gpu_name"] == "none" and fp["precision"] == r.precision and fp["cuda"]


@pytest.mark.parametrize(("name", "provider"), [("gpu-ort", "CUDAExecutionProvider"), ("gpu-trt", "Tensorrt")])
def test_onnx_gpu_runners_say_which_provider_is_missing(name: str, provider: str, model_and_onnx) -> None:
    import onnxruntime as ort

    _, art, _ = model_and_onnx
    r = get_runner(name)
    if any(p.startswith(provider) for p in ort.get_available_providers()) and torch.cuda.is_available():
        return
    avail = r.availability()
    assert not avail.available and (provider in avail.reason or "CUDA" in avail.reason)
    with pytest.raises(RunnerUnavailableError, match=name):
        r.load(art.path)


def test_gpu_runner_precision_is_validated() -> None:
    from evaluators.runners.gpu import TorchGpuRunner

    with pytest.raises(ValueError, match="valid: fp16, bf16"):
        TorchGpuRunner(precision="int4")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["gpu", "gpu-bf16"])
def test_torch_gpu_runner_agrees_with_fp32(name: str, with_torch_artifact) -> None:
    model, onnx_path, x = with_torch_artifact
    r = get_runner(name)
    assert r.availability().available, r.availability().reason
    assert isinstance(r, PeakMemory)
    r.reset_peak_memory()
    session = r.load(r.prepare(onnx_path, onnx_path.parent, None))
    logits = r.predict(session, x)
    r.synchronize()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert logits.dtype == np.float32 and logits.shape == ref.shape
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.abs(logits - ref).max() < 0.1 * (np.abs(ref).max() + 1)
    assert r.peak_memory_mb() > 0
    fp = r.fingerprint(1, 32)
    assert fp["gpu_name"] != "none" and fp["gpu_driver"] and fp["memory_format"] == "channels_last"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_onnx_cuda_runner_matches_torch(model_and_onnx) -> None:
    model, art, x = model_and_onnx
    r = get_runner("gpu-ort")
    if not r.availability().available:
        pytest.skip(r.availability().reason)
    logits = r.predict(r.load(art.path), x)
    assert check_parity(model, logits, x, atol=1e-2, rtol=1e-2).ok


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
    int8 = r.prepare(art.path, tmp_path, ArrayCalibration(x))
    assert int8.stat().st_size < art.bytes / 2  # int8 weights
    logits = r.predict(r.load(int8), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.8
    # the classifier stays float: logits are not a few quantized levels, so top-1 never rests on a tie rule
    assert all(len(np.unique(row)) == row.size for row in logits)
    fp = r.fingerprint(1, 32)
    assert fp["precision"] == "int8" and fp["threads"] == "1" and "quantization" in fp and fp["cpu_isa"]


def test_edge_runner_needs_calibration(model_and_onnx, tmp_path: Path) -> None:
    _, art, _ = model_and_onnx
    with pytest.raises(ValueError, match="calibration"):
        get_runner("edge").prepare(art.path, tmp_path, None)


def test_unknown_runner_lists_known() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean 'gpu', 'cpu'.*`cnnselect runners` lists them"):
        get_runner("tpu")
    assert set(RUNNER_NAMES) >= {"cpu", "edge", "torch-cpu", "gpu", "gpu-bf16", "gpu-ort", "gpu-trt"}


def test_export_failure_is_typed(tmp_path: Path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[0, 0]).real.unsqueeze(0)  # no ONNX operator for eigvals

    with pytest.raises(ExportError, match="ONNX export failed"):
        export_onnx(Unexportable(), np.zeros((1, 3, 8, 8), np.float32), tmp_path)


def test_fingerprint_versions_match_the_imported_packages_without_importing_them() -> None:
    import onnxruntime
    import timm

    from evaluators.runners.base import software_versions

    expected = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "timm": timm.__version__}
    assert software_versions() == expected  # torch's build label (+cpu, +cu130) included


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 16])
def test_edge_calibration_streams_any_number_of_batches(model_and_onnx, tmp_path: Path, n: int) -> None:
    """Any number of streamed calibration batches quantizes (one image a batch: the large-input setting)."""
    from evaluators.runners.edge import OnnxEdgeInt8Runner

    _, art, x = model_and_onnx
    r = OnnxEdgeInt8Runner(calibration_batch=1)
    int8 = r.prepare(art.path, tmp_path, ArrayCalibration(x[:n]))
    assert np.isfinite(r.predict(r.load(int8), x[:2])).all()
