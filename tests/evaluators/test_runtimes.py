"""The deployed runtimes: OpenVINO (fp32 / bf16 / NNCF int8), ExecuTorch + XNNPACK (fp32 / int8), LiteRT.

Each runner converts timm's tiny ``test_resnet`` (32x32, 10 classes) to its own artifact, and what that artifact
predicts is checked against eager torch: FP32 to 1e-4, bf16 / INT8 by top-1 agreement (>= 0.8) and logits that are
finite and not collapsed to a few quantized levels (the classifier stays float in every INT8 runner).
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catalog import get_entry
from catalog.weights import create_model
from evaluators.accuracy import accuracy
from evaluators.export import export_onnx
from evaluators.runners import TORCH_RUNNERS, RunnerUnavailableError, artifact_files, get_runner
from evaluators.runners.base import ArrayCalibration

FP32 = ("openvino-fp32", "executorch-xnnpack-fp32")
LOW_PRECISION = ("openvino-bf16", "openvino-int8", "executorch-xnnpack-int8")
N_EVAL, N_CAL = 40, 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """The ONNX export with the torch artifact beside it (as the pipeline writes them), eval and calibration images."""
    from evaluators.runners.torch_cpu import save_torch_artifact

    torch.manual_seed(0)
    model = create_model(get_entry("test_resnet.r160_in1k"), 10).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_EVAL, 3, 32, 32)).astype(np.float32)
    x_cal = rng.normal(size=(N_CAL, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp_path_factory.mktemp("fp32"))
    save_torch_artifact(model, "test_resnet.r160_in1k", 10, art.path.parent)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return art, x, x_cal, ref


@pytest.fixture(scope="module")
def prepared(exported, tmp_path_factory: pytest.TempPathFactory):
    """runner name -> its artifact, converted once per module (ExecuTorch lowering takes seconds)."""
    art, _, x_cal, _ = exported
    done: dict[str, Path] = {}

    def prepare(name: str) -> Path:
        if name not in done:
            r = get_runner(name)
            if not r.availability().available:
                pytest.skip(f"{name}: {r.availability().reason}")
            done[name] = r.prepare(art.path, tmp_path_factory.mktemp(name), ArrayCalibration(x_cal))
        return done[name]

    return prepare


def _logits(name: str, artifact: Path, x: np.ndarray) -> np.ndarray:
    r = get_runner(name)
    out = r.predict(r.load(artifact), x)
    r.synchronize()
    return out


@pytest.mark.parametrize("name", FP32)
def test_fp32_runtime_matches_torch(name: str, exported, prepared) -> None:
    _, x, _, ref = exported
    logits = _logits(name, prepared(name), x)
    assert logits.dtype == np.float32 and logits.shape == ref.shape
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", LOW_PRECISION)
def test_low_precision_runtime_agrees_and_keeps_float_logits(name: str, exported, prepared) -> None:
    _, x, _, ref = exported
    logits = _logits(name, prepared(name), x)
    assert logits.dtype == np.float32 and logits.shape == ref.shape and np.isfinite(logits).all()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.8
    # not a handful of quantized levels: every logit of a row distinct, and nearly every logit of the set
    assert all(len(np.unique(row)) == row.size for row in logits)
    assert len(np.unique(logits)) >= 0.9 * logits.size
    assert np.abs(logits - ref).max() < 0.1 * (np.abs(ref).max() + 1)


@pytest.mark.parametrize("name", FP32 + LOW_PRECISION)
def test_accuracy_comes_from_the_artifact_on_disk(name: str, exported, prepared) -> None:
    """A fresh runner loading the saved file reproduces the predictions; accuracy is computed from them."""
    _, x, _, ref = exported
    artifact = prepared(name)
    labels = ref.argmax(1).copy()
    labels[:10] = (labels[:10] + 1) % 10  # 10 of 40 labels disagree with torch: an FP32 artifact scores 0.75
    first, again = _logits(name, artifact, x), _logits(name, artifact, x)
    np.testing.assert_array_equal(first, again)
    acc = accuracy(first, labels)
    assert acc.n == N_EVAL and acc.top1 == pytest.approx(float((first.argmax(1) == labels).mean()))
    if name in FP32:
        assert acc.top1 == pytest.approx(0.75)


def test_openvino_fp32_does_not_silently_run_bf16(exported, prepared) -> None:
    import openvino as ov

    artifact = prepared("openvino-fp32")
    assert {p.name for p in artifact_files(artifact)} == {"model.xml", "model.bin"}
    art, _, _, _ = exported
    assert artifact.with_suffix(".bin").stat().st_size >= 0.9 * art.bytes  # compress_to_fp16=False: fp32 on disk
    r = get_runner("openvino-fp32")
    r.load(artifact)
    fp = r.fingerprint(1, 32)
    assert fp["precision_hint"] == "f32" and fp["execution_precision"] == "f32"
    assert "bf16" not in fp["runtime_precisions"].split(",")
    core = ov.Core()
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):  # the case the explicit hint exists for
        assert core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name() == "bf16"


def test_openvino_bf16_and_int8_run_at_their_precision(exported, prepared) -> None:
    for name, expected in (("openvino-bf16", {"bf16"}), ("openvino-int8", {"i8", "u8"})):
        r = get_runner(name)
        artifact = prepared(name)
        r.load(artifact)
        fp = r.fingerprint(1, 32)
        assert expected & set(fp["runtime_precisions"].split(",")), (name, fp["runtime_precisions"])
        assert fp["openvino"] and fp["openvino"] != "absent" and fp["nncf"] != "absent"
    int8_bin = prepared("openvino-int8").with_suffix(".bin").stat().st_size
    assert int8_bin < prepared("openvino-fp32").with_suffix(".bin").stat().st_size / 2  # int8 weights on disk
    assert get_runner("openvino-int8").fingerprint(1, 32)["execution_precision"] == "f32"  # the float layers


def test_openvino_int8_keeps_silu_networks_alive(tmp_path: Path) -> None:
    """EfficientNet's SiLU: from ``Core.read_model``'s unfused graph, NNCF's INT8 model output all-zero logits.

    test_efficientnet's logits differ by less than INT8's error, so top-1 agreement would be a coin toss here; the
    check is that the logits exist (not zero, not a few levels) and follow torch's (correlation).
    """
    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    rng = np.random.default_rng(1)
    x, x_cal = (rng.normal(size=(n, 3, 32, 32)).astype(np.float32) for n in (24, 16))
    art = export_onnx(model, x, tmp_path / "fp32")
    r = get_runner("openvino-int8")
    logits = r.predict(r.load(r.prepare(art.path, tmp_path / "int8", ArrayCalibration(x_cal))), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(logits).max() > 0.1 * np.abs(ref).max()
    assert all(len(np.unique(row)) == row.size for row in logits)
    assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.9


def test_openvino_threads_are_set_and_read_back(prepared) -> None:
    from evaluators.runners.openvino import OpenVinoRunner

    r = OpenVinoRunner(precision="fp32", threads=1)
    assert r.fingerprint(1, 32)["execution_threads"] == "1"  # before any load: a probe model with the same config
    r.load(prepared("openvino-fp32"))
    fp = r.fingerprint(4, 32)
    assert fp["threads"] == "1" and fp["execution_threads"] == "1" and fp["performance_hint"] == "LATENCY"
    assert fp["batch_size"] == "4" and fp["cpu_model"] and fp["cpu_isa"]


def test_int8_runners_need_calibration(exported, tmp_path: Path) -> None:
    art, _, _, _ = exported
    for name in ("openvino-int8", "executorch-xnnpack-int8"):
        with pytest.raises(ValueError, match="calibration"):
            get_runner(name).prepare(art.path, tmp_path, None)


def test_executorch_artifact_batches_and_threads(exported, prepared) -> None:
    from executorch.extension.pybindings import portable_lib

    from evaluators.runners.executorch import ExecuTorchXnnpackRunner

    _, x, _, ref = exported
    fp32, int8 = prepared("executorch-xnnpack-fp32"), prepared("executorch-xnnpack-int8")
    assert artifact_files(fp32) == [fp32] and fp32.suffix == ".pte"
    assert int8.stat().st_size < fp32.stat().st_size / 2  # int8 weights
    before = portable_lib._threadpool_get_thread_count()
    try:
        r = ExecuTorchXnnpackRunner(precision="fp32", threads=1)
        session = r.load(fp32)
        assert portable_lib._threadpool_get_thread_count() == 1
        big = np.concatenate([x, x])  # 80 images: ten times the batch bound, run in chunks
        np.testing.assert_allclose(r.predict(session, big), np.concatenate([ref, ref]), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r.predict(session, x[:1]), ref[:1], rtol=1e-4, atol=1e-4)
        fp = r.fingerprint(1, 32)
        assert fp["measured_on"] == "host" and fp["threads"] == "1 (pool: 1)" and fp["executorch"] == "1.5.1"
        assert get_runner("executorch-xnnpack-int8").fingerprint(1, 32)["quantization"].endswith("fp32-classifier")
    finally:
        portable_lib._unsafe_reset_threadpool(before)


def test_executorch_and_litert_deploy_the_torch_artifact(exported, tmp_path: Path) -> None:
    from evaluators.runners.torch_cpu import TorchArtifactError

    art, _, x_cal, _ = exported
    assert {"executorch-xnnpack-fp32", "executorch-xnnpack-int8", "litert-fp32", "litert-int8"} <= set(TORCH_RUNNERS)
    shutil.copy(art.path, tmp_path / "model.onnx")  # the graph alone, no torch_model.json beside it
    with pytest.raises(TorchArtifactError, match="torch_model.json"):
        get_runner("executorch-xnnpack-fp32").prepare(tmp_path / "model.onnx", tmp_path, ArrayCalibration(x_cal))


@pytest.mark.parametrize(
    ("name", "module", "says"),
    [
        ("openvino-fp32", "openvino", "openvino is not installed"),
        ("openvino-int8", "nncf", "nncf is not installed"),
        ("executorch-xnnpack-fp32", "executorch.runtime", "executorch is not installed"),
    ],
)
def test_missing_package_makes_the_runner_unavailable(
    name: str, module: str, says: str, exported, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The packages are installed here, so their absence is simulated: ``None`` in ``sys.modules`` fails the import."""
    art, _, x_cal, _ = exported
    monkeypatch.setitem(sys.modules, module, None)
    r = get_runner(name)
    avail = r.availability()
    assert not avail.available and says in avail.reason
    with pytest.raises(RunnerUnavailableError, match=name):
        r.prepare(art.path, tmp_path, ArrayCalibration(x_cal))
    assert r.fingerprint(1, 32)["precision"] == r.precision  # still describes itself


def test_nncf_missing_leaves_openvino_fp32_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert get_runner("openvino-fp32").availability().available
    assert not get_runner("openvino-int8").availability().available


@pytest.mark.parametrize("name", ["litert-fp32", "litert-int8"])
@pytest.mark.parametrize("missing", ["litert_torch", "ai_edge_litert.interpreter"])
def test_litert_is_unavailable_without_its_extra(
    name: str, missing: str, exported, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Airflow venv has no LiteRT (its converter pins typing-extensions below Airflow's): the runner says how.

    Its absence is made certain with ``None`` in ``sys.modules``, converter and runtime each in turn; the real
    conversion and interpreter path runs in ``.venv-litert`` (tests/evaluators/test_litert.py).
    """
    art, _, x_cal, _ = exported
    monkeypatch.setitem(sys.modules, missing, None)
    r = get_runner(name)
    avail = r.availability()
    assert not avail.available
    assert avail.reason.startswith("unavailable: install cnnselect[litert]") and missing in avail.reason
    with pytest.raises(RunnerUnavailableError, match=name):
        r.prepare(art.path, tmp_path, ArrayCalibration(x_cal))
    with pytest.raises(RunnerUnavailableError, match="cnnselect\\[litert\\]"):
        r.load(tmp_path / "model.tflite")
    fp = r.fingerprint(1, 32)
    assert fp["precision"] == r.precision and fp["measured_on"] == "host"


def test_litert_int8_tensors_are_quantized_and_dequantized_through_their_own_scale() -> None:
    from evaluators.runners.litert import dequantize_output, quantize_input

    x = np.array([[-1.0, 0.0, 0.5, 10.0]], np.float32)
    q = quantize_input(x, {"dtype": np.int8, "quantization": (0.05, -3)})
    assert q.dtype == np.int8 and q.tolist() == [[-23, -3, 7, 127]]  # 10.0 saturates at 127
    back = dequantize_output(q, {"dtype": np.int8, "quantization": (0.05, -3)})
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[0, :3], x[0, :3], atol=0.025)  # within half a step
    assert quantize_input(x, {"dtype": np.float32, "quantization": (0.0, 0)}) is x  # float tensors pass untouched
    np.testing.assert_array_equal(dequantize_output(x, {"dtype": np.float32, "quantization": (0.0, 0)}), x)


@pytest.mark.parametrize(
    ("module", "cls", "valid"),
    [
        ("evaluators.runners.openvino", "OpenVinoRunner", "fp32, bf16, int8"),
        ("evaluators.runners.executorch", "ExecuTorchXnnpackRunner", "fp32, int8"),
        ("evaluators.runners.litert", "LiteRtRunner", "fp32, int8"),
    ],
)
def test_runtime_precision_is_validated(module: str, cls: str, valid: str) -> None:
    import importlib

    with pytest.raises(ValueError, match=f"valid: {valid}"):
        getattr(importlib.import_module(module), cls)(precision="fp16")


def test_executorch_batch_bound_is_validated() -> None:
    from evaluators.runners.executorch import ExecuTorchXnnpackRunner

    with pytest.raises(ValueError, match="valid: 2 or more"):
        ExecuTorchXnnpackRunner(max_batch=1)


def _calibration_top1(name: str, runner, artifact: Path, cal: ArrayCalibration) -> float:
    session = runner.load(artifact)
    logits = np.concatenate([runner.predict(session, b) for b in cal.batches(8)])
    return accuracy(logits, cal.labels).top1


def test_openvino_accuracy_control_keeps_int8_within_the_drop(exported, tmp_path: Path) -> None:
    """NNCF's accuracy-aware recipe, judged on the labelled calibration split: within max_drop of the FP32 export."""
    art, _, x_cal, _ = exported
    fp32 = get_runner("openvino-fp32")
    labels = np.argmax(fp32.predict(fp32.load(fp32.prepare(art.path, tmp_path / "f", None)), x_cal), axis=1)
    cal = ArrayCalibration(x_cal, labels)  # the float model's own answers: its calibration top-1 is exactly 1.0
    plain = get_runner("openvino-int8")
    assert plain.recipes == ("ptq", "accuracy-control") and plain.recipe == "ptq"
    controlled = plain.with_recipe("accuracy-control", max_drop=0.02)
    artifact = controlled.prepare(art.path, tmp_path / "ac", cal)
    assert _calibration_top1("openvino-int8", controlled, artifact, cal) >= 1.0 - 0.02
    with pytest.raises(ValueError, match="labelled calibration split"):
        controlled.prepare(art.path, tmp_path / "nolabels", ArrayCalibration(x_cal))
    with pytest.raises(ValueError, match="valid: ptq, accuracy-control"):
        plain.with_recipe("magic", 0.01)


def test_edge_float_sensitive_recipe_keeps_depthwise_convs_float(tmp_path: Path) -> None:
    import onnx

    from evaluators.runners.edge import sensitive_nodes

    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(1).normal(size=(16, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp_path / "fp32")
    keep = sensitive_nodes(art.path)
    graph = onnx.load(str(art.path), load_external_data=False).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    grouped = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert grouped and set(grouped) < set(keep)  # every depthwise conv, and the stem

    def quantized_convs(recipe: str) -> set[str]:
        runner = get_runner("edge").with_recipe(recipe, 0.01)
        out = onnx.load(str(runner.prepare(art.path, tmp_path / recipe, ArrayCalibration(x))), load_external_data=False)
        deq = {o for n in out.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return {n.name for n in out.graph.node if n.op_type == "Conv" and n.input[1] in deq}  # INT8 weights

    assert set(grouped) & quantized_convs("ptq")
    assert not set(keep) & quantized_convs("float-sensitive")
