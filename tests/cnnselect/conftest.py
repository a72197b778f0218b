"""A real SQLite MLflow store with hand-chosen measurements, logged without training (a tiny exported ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# (variant, runner, family, top1, p95 ms, params M, MB): the frontier on cpu is fast -> mid -> big
MEASURED = [
    ("fast", "cpu", "mobilenetv3", 0.80, 1.0, 2.0, 1.0),
    ("mid", "cpu", "efficientnet", 0.90, 3.0, 5.0, 3.0),
    ("slowbad", "cpu", "resnet", 0.85, 6.0, 11.0, 9.0),  # dominated by mid
    ("big", "cpu", "resnet", 0.97, 9.0, 25.0, 20.0),
    ("tiny", "edge", "mobilenetv3", 0.78, 0.8, 2.0, 0.5),
    ("mid", "edge", "efficientnet", 0.88, 2.5, 5.0, 1.0),
]
TEAMS_YAML = {  # registry.teams' format: the file name is the team name
    "camera": "{target: edge, max_latency_ms: 2.0, min_top1: 0.7, max_params_m: 6}",
    "server": "{target: cpu, max_latency_ms: 5.0, min_top1: 0.85}",
    "impossible": "{target: cpu, max_params_m: 0.5}",
}


def log_measurements(home: Path, tmp: Path, dataset: str = "digits", measured: list | None = None) -> None:
    import torch

    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.export import export_onnx
    from evaluators.runners import runner_host_id
    from registry.settings import Settings
    from registry.tracking import DatasetRef, Evaluation
    from registry.writes import log_evaluation

    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, tmp / "onnx")
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    settings = Settings(home=home)
    ds = DatasetRef(dataset, "d" * 64, str(tmp), tuple("0123456789"), "h" * 64, 450)
    for i, (variant, runner, family, top1, p95, params, mb) in enumerate(measured or MEASURED):
        metrics = {
            "top1": top1,
            "top1_ci_low": top1 - 0.02,
            "latency_p95_ms": p95,
            "latency_p95_ub_ms": p95 * 1.05,
            "params_m": params,
            "size_mb": mb,
            "gmacs": params / 10,
            "onnx_parity_ok": 1.0,
        }
        precision = "int8" if runner == "edge" else "fp32"
        ev = Evaluation(
            variant, family, runner, precision, ds, f"k{i}", "sweep-1", {"cpu": "x"}, "fp1", "w" * 64, "scratch",
            art.path, x[:1], y[:1], {"variant": variant}, metrics, host=runner_host_id(runner, {"cpu": "x"}),
        )  # fmt: skip
        log_evaluation(settings, ev)


@pytest.fixture(scope="session")
def measured_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNNSELECT_HOME whose store holds MEASURED on dataset ``digits``; tests only read it (or tag idempotently)."""
    home = tmp_path_factory.mktemp("measured-home")
    log_measurements(home, tmp_path_factory.mktemp("measured-onnx"))
    return home


# the catalog's longest names, which an 80-column terminal must still show whole
LONG_NAMES = {
    "fast": "mobilenetv3_small_100.lamb_in1k",
    "mid": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "slowbad": "tf_efficientnet_lite2.in1k",
    "big": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "tiny": "efficientnet_lite0.ra_in1k",
}


@pytest.fixture(scope="session")
def long_names_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MEASURED again, under the catalog's longest model names."""
    home = tmp_path_factory.mktemp("long-names-home")
    renamed = [(LONG_NAMES[m[0]], *m[1:]) for m in MEASURED]
    log_measurements(home, tmp_path_factory.mktemp("long-names-onnx"), measured=renamed)
    return home


@pytest.fixture
def teams_dir(tmp_path: Path) -> Path:
    d = tmp_path / "teams"
    d.mkdir()
    for name, text in TEAMS_YAML.items():
        (d / f"{name}.yaml").write_text(f"name: {name}\ndescription: test team\nconstraints: {text}\n")
    return d
