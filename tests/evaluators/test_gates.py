"""The Great Expectations gates on real folders and real metrics: what passes, what fails, and why it says so."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from evaluators.data import load_manifest, scan, write_manifest
from evaluators.gates import (
    DATA_SUITE,
    RESULTS_SUITE,
    DataGateConfig,
    GateError,
    ResultsGateConfig,
    check_data,
    check_results,
    comparable_params,
    gate_evaluation,
    gate_evaluations,
)
from tests.evaluators.test_data import _user_folder


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory, digits_root: Path) -> Path:
    """Two classes of real scans (train + heldout), copied once per module; tests copy it before changing it."""
    return _user_folder(tmp_path_factory.mktemp("gates") / "pets", digits_root)


def _copy(pets: Path, tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    shutil.copytree(pets, root)
    (root / "manifest.json").unlink(missing_ok=True)
    return root


def test_clean_folder_passes_and_result_is_json(pets: Path) -> None:
    r = check_data(load_manifest(pets))
    assert r.success, r.failures
    assert r.suite == DATA_SUITE and set(r.validation) == {"heldout", "train", "across_splits"}
    assert all(v["success"] for v in r.validation.values())


def test_corrupt_and_truncated_images_fail_the_gate(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    (root / "heldout" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = next((root / "heldout" / "dog").glob("*.png")).read_bytes()
    (root / "heldout" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    r = check_data(scan(root))
    assert not r.success
    text = " ".join(r.failures)
    assert "[heldout] expect_column_values_to_be_in_set {'column': 'decodes'" in text
    assert "[heldout] expect_column_values_to_not_be_null {'column': 'sha256'}" in text  # unreadable: no hash


def test_decompression_bomb_fails_the_gate(pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(pets, tmp_path)
    Image.new("L", (4000, 4000)).save(root / "heldout" / "cat" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    r = check_data(scan(root))
    assert not r.success and any("'decodes'" in f for f in r.failures)


def test_wrong_label_map_fails_both_ways(pets: Path) -> None:
    r = check_data(load_manifest(pets), DataGateConfig(classes=("cat", "bird")))
    assert not r.success
    text = " ".join(r.failures)
    assert "expect_column_values_to_be_in_set {'column': 'label'" in text and "'dog'" in text  # label outside
    assert "expect_column_distinct_values_to_contain_set" in text and "'bird'" in text  # class never present


def test_duplicates_within_and_across_splits_fail(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    first = sorted((root / "heldout" / "cat").glob("*.png"))[0]
    shutil.copy(first, root / "heldout" / "cat" / "again.png")  # same bytes, same split
    train_img = sorted((root / "train" / "dog").glob("*.png"))[0]
    shutil.copy(train_img, root / "heldout" / "dog" / "leak.png")  # same bytes in train and heldout
    r = check_data(scan(root))
    assert not r.success
    assert any(f.startswith("[heldout] expect_column_values_to_be_unique {'column': 'sha256'}") for f in r.failures)
    assert any(f.startswith("[across_splits] expect_column_values_to_be_unique") for f in r.failures)


def test_empty_or_small_split_fails_never_vacuously(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    for p in (root / "heldout" / "dog").glob("*.png"):
        p.unlink()
    r = check_data(scan(root), DataGateConfig(min_rows=10_000))
    text = " ".join(r.failures)
    assert not r.success
    assert "[heldout] expect_table_row_count_to_be_between" in text
    assert "[heldout] expect_column_distinct_values_to_contain_set" in text and "'dog'" in text

    for p in (root / "heldout" / "cat").glob("*.png"):
        p.unlink()
    write_manifest(scan(root))
    r = check_data(load_manifest(root))  # an empty split: every column empty, nothing may pass vacuously
    assert not r.success and any("[heldout] expect_table_row_count_to_be_between" in f for f in r.failures)


def test_sizes_and_channels_are_checked(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    Image.new("RGBA", (16, 16)).save(root / "heldout" / "cat" / "rgba.png")
    Image.new("L", (4, 4), 128).save(root / "heldout" / "dog" / "tiny.png")
    r = check_data(scan(root))
    text = " ".join(r.failures)
    assert "'column': 'channels'" in text and "'column': 'width'" in text and "'column': 'height'" in text


GOOD = {
    "top1": 0.9,
    "top5": 1.0,
    "top1_ci_low": 0.85,
    "top1_ci_high": 0.94,
    "latency_p50_ms": 1.0,
    "latency_p95_ms": 1.2,
    "latency_p99_ms": 1.5,
    "latency_mean_ms": 1.1,
    "latency_cov": 0.1,
    "size_mb": 2.0,
    "params_m": 0.5,
}


def _ev(**changes: float) -> dict:
    return {"variant": "m", "runner": "cpu", "metrics": {**GOOD, **changes}}


def test_results_gate_passes_good_metrics() -> None:
    r = check_results([_ev(), {**_ev(), "runner": "edge"}])
    assert r.success and r.suite == RESULTS_SUITE and r.subject == "m/cpu, m/edge"


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"top1": math.nan}, "top1"),
        ({"latency_p95_ms": math.inf}, "latency_p95_ms"),
        ({"top1": 1.2}, "top1"),
        ({"latency_p50_ms": 0.0}, "latency_p50_ms"),
        ({"latency_cov": 0.9}, "latency_cov_unstable"),
        ({"latency_cov": 0.9, "latency_stable": 0.0}, "latency_cov_unstable"),
        ({"size_mb": -1.0}, "size_mb"),
    ],
)
def test_results_gate_fails_bad_metrics(change: dict, column: str) -> None:
    r = check_results([_ev(**change)], ResultsGateConfig(max_latency_cov=0.5))
    named = [f for f in r.failures if f"'column': '{column}'" in f or f"saw ['{column}']" in f]  # the metric named
    assert not r.success and named, r.failures


def test_results_gate_missing_metric_or_no_rows_fails() -> None:
    metrics = dict(GOOD)
    del metrics["latency_cov"]
    r = check_results([{"variant": "m", "runner": "cpu", "metrics": metrics}])
    missing = [f for f in r.failures if f.startswith("[evaluations] expect_table_columns_to_match_set")]
    assert not r.success and missing and "'latency_cov'" in missing[0], r.failures
    assert not check_results([]).success
    assert not check_results([_ev()], ResultsGateConfig(max_latency_cov=0.05)).success
    assert check_results([_ev(latency_cov=3.0, latency_stable=1.0)], ResultsGateConfig(0.5)).success  # windows agree
    assert ResultsGateConfig().max_latency_cov == float(os.environ["CNNSELECT_GATE_MAX_LATENCY_COV"])


def test_params_compare_without_the_head() -> None:
    """resnet18 with a 10-class head against its published 1000-class figure: equal once the heads are set aside."""
    import timm

    from catalog import get_entry

    entry = get_entry("resnet18.tv_in1k")
    assert entry.published is not None
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    cmp = comparable_params(model, entry.published.params_m)
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - entry.published.params_m) / entry.published.params_m > 0.04  # the raw counts differ by the head
    rel = abs(cmp["params_backbone_m"] - cmp["published_backbone_params_m"]) / cmp["published_backbone_params_m"]
    assert rel < 0.01
    assert check_results([_ev(**cmp)]).success
    assert not check_results([_ev(**comparable_params(model, 2 * entry.published.params_m))]).success
    assert comparable_params(model, None) == {}


def test_gate_evaluation_writes_result_and_raises(tmp_path: Path) -> None:
    class Ev:
        variant, runner = "m", "cpu"
        metrics = {**GOOD, "top1": math.nan}

    with pytest.raises(GateError, match=r"gate cnnselect.results failed for m/cpu: .*'top1'") as info:
        gate_evaluation(Ev(), object(), None, tmp_path)
    assert (tmp_path / "cnnselect.results.json").exists()
    assert info.value.result.validation["evaluations"]["success"] is False
    Ev.metrics = dict(GOOD)
    assert gate_evaluation(Ev(), object(), None, tmp_path).name == "cnnselect.results.json"


def test_a_models_runners_are_gated_together_and_a_failure_is_judged_per_runner(tmp_path: Path) -> None:
    class Ev:
        def __init__(self, runner: str, **changes: float) -> None:
            self.variant, self.runner, self.metrics = "m", runner, {**GOOD, **changes}

    good = gate_evaluations([Ev("cpu"), Ev("edge")], object(), None, [tmp_path / "cpu", tmp_path / "edge"])
    assert {r: p.name for r, p in good.items() if isinstance(p, Path)} == {"cpu": RESULTS_SUITE + ".json"} | {
        "edge": RESULTS_SUITE + ".json"
    }
    saved = json.loads((tmp_path / "edge" / f"{RESULTS_SUITE}.json").read_text())
    assert saved["success"] and saved["subject"] == "m/cpu, m/edge"  # one validation covered both
    mixed = gate_evaluations([Ev("cpu"), Ev("edge", top1=math.nan)], object(), None, [tmp_path / "c", tmp_path / "e"])
    assert isinstance(mixed["cpu"], Path) and isinstance(mixed["edge"], GateError)
    assert mixed["edge"].result.subject == "m/edge" and "'top1'" in str(mixed["edge"])  # named for its own figures
    assert json.loads((tmp_path / "c" / f"{RESULTS_SUITE}.json").read_text())["subject"] == "m/cpu"
    assert gate_evaluations([], object(), None, []) == {}
