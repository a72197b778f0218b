"""The Great Expectations gates on real folders and real metrics: what passes, what fails, and why it says so."""

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import evaluators.gates as gates
from evaluators.data import scan
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
from registry.settings import Settings
from tests.evaluators.test_data import _user_folder


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory, digits_root: Path) -> Path:
    """Two classes of real scans (train + heldout), copied once per module; tests copy it before changing it."""
    return _user_folder(tmp_path_factory.mktemp("gates") / "pets", digits_root)


def _copy(pets: Path, tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    shutil.copytree(pets, root)
    return root


def test_clean_folder_passes_and_result_is_json(pets: Path) -> None:
    r = check_data(scan(pets))
    assert r.success, r.failures
    assert r.suite == DATA_SUITE
    assert set(r.validation) == {"heldout", "heldout_quarantine", "train", "train_quarantine", "across_splits"}
    assert all(v["success"] for v in r.validation.values())
    assert json.loads(json.dumps(r.to_json()))["quarantined"] == {}


def test_a_few_bad_files_are_quarantined_and_the_gate_still_passes(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    (root / "heldout" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = next((root / "heldout" / "dog").glob("*.png")).read_bytes()
    (root / "heldout" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGBA", (16, 16), (10, 20, 30, 128)).save(root / "heldout" / "cat" / "rgba.png")  # usable, not bad
    r = check_data(scan(root))
    assert r.success, r.failures
    assert set(r.quarantined) == {"heldout/cat/broken.png", "heldout/dog/truncated.png"}  # named in the result


def test_too_much_quarantined_fails_the_gate_and_names_the_files(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    for i in range(30):
        (root / "heldout" / "cat" / f"broken_{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = check_data(scan(root), DataGateConfig(max_quarantined_fraction=0.05))
    assert not r.success
    text = " ".join(r.failures)
    assert "[heldout_quarantine] expect_column_values_to_be_in_set {'column': 'quarantined'" in text
    assert "heldout: 30 of" in text and "heldout/cat/broken_00.png" in text
    assert check_data(scan(root), DataGateConfig(max_quarantined_fraction=0.5)).success  # configurable


def test_decompression_bomb_is_quarantined_not_fatal(
    pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(pets, tmp_path)
    Image.new("L", (4000, 4000)).save(root / "heldout" / "cat" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    r = check_data(scan(root))
    assert r.success and "heldout/cat/bomb.png" in r.quarantined


def test_wrong_label_map_fails_both_ways(pets: Path) -> None:
    r = check_data(scan(pets), DataGateConfig(classes=("cat", "bird")))
    assert not r.success
    text = " ".join(r.failures)
    assert "expect_column_values_to_be_in_set {'column': 'label'" in text and "'dog'" in text  # label outside
    assert "expect_column_distinct_values_to_contain_set" in text and "'bird'" in text  # class never present


def test_a_copy_across_splits_is_a_leak_and_fails(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    first = sorted((root / "heldout" / "cat").glob("*.png"))[0]
    shutil.copy(first, root / "heldout" / "cat" / "zz_again.png")  # same bytes, same split: quarantined only
    train_img = sorted((root / "train" / "dog").glob("*.png"))[0]
    shutil.copy(train_img, root / "heldout" / "dog" / "leak.png")  # same bytes in train and heldout
    r = check_data(scan(root))
    assert not r.success
    assert "heldout/cat/zz_again.png" in r.quarantined
    assert any(f.startswith("[across_splits] expect_column_values_to_be_unique") for f in r.failures)
    assert any("heldout/dog/leak.png" in f and "more than one split" in f for f in r.failures)


def test_empty_or_small_split_fails_never_vacuously(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    for p in (root / "heldout" / "dog").glob("*.png"):
        p.unlink()
    r = check_data(scan(root), DataGateConfig(min_rows=10_000))
    text = " ".join(r.failures)
    assert not r.success
    assert "[heldout] expect_table_row_count_to_be_between" in text
    assert "[heldout] expect_column_distinct_values_to_contain_set" in text and "'dog'" in text  # no image left

    for p in (root / "heldout" / "cat").glob("*.png"):
        p.unlink()
    r = check_data(scan(root))  # an empty split: every column empty, nothing may pass vacuously
    assert not r.success and any("[heldout] expect_table_row_count_to_be_between" in f for f in r.failures)


def test_a_class_missing_from_train_fails(pets: Path, tmp_path: Path) -> None:
    root = _copy(pets, tmp_path)
    shutil.rmtree(root / "train" / "dog")
    r = check_data(scan(root))
    assert not r.success and any("[train] expect_column_distinct_values_to_contain_set" in f for f in r.failures)


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
        ({"onnx_parity_max_abs_diff": math.nan}, "onnx_parity_max_abs_diff"),  # a metric with no bound: finite still
    ],
)
def test_results_gate_fails_bad_metrics(change: dict, column: str) -> None:
    r = check_results([_ev(**change)], ResultsGateConfig(max_latency_cov=0.5))
    named = [f for f in r.failures if f"'runner': 'cpu', 'metric': '{column}'" in f]  # the metric named, its bound
    assert not r.success and len(r.failures) == 1 and named, r.failures


def test_a_failure_quotes_the_row_and_the_bound_it_broke() -> None:
    (failure,) = check_results([_ev(top1=1.2), {**_ev(), "runner": "edge"}]).failures
    assert failure.endswith("saw [{'variant': 'm', 'runner': 'cpu', 'metric': 'top1', 'at_most': 1.0, 'value': 1.2}]")
    assert not check_results([{**_ev(), "variant": None}]).success


def test_results_gate_missing_metric_or_no_rows_fails() -> None:
    metrics = dict(GOOD)
    del metrics["latency_cov"]
    r = check_results([{"variant": "m", "runner": "cpu", "metrics": metrics}])
    missing = [f for f in r.failures if f.startswith("[evaluations] expect_column_values_to_not_be_null")]
    assert not r.success and missing and "'metric': 'latency_cov'" in missing[0], r.failures
    assert not check_results([]).success
    assert not check_results([_ev()], ResultsGateConfig(max_latency_cov=0.05)).success
    assert check_results([_ev(latency_cov=3.0, latency_stable=1.0)], ResultsGateConfig(0.5)).success  # windows agree
    assert Settings().gate_max_latency_cov == float(os.environ["CNNSELECT_GATE_MAX_LATENCY_COV"])  # the pipeline's


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


def test_a_models_runners_are_gated_together_and_a_failure_is_judged_per_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    calls: list[int] = []
    real = gates.check_results

    def counted(evs: Any, config: Any = None, subject: Any = None) -> Any:
        calls.append(len(evs))
        return real(evs, config, subject)

    monkeypatch.setattr(gates, "check_results", counted)
    alone = gate_evaluations([Ev("edge", top1=math.nan)], object(), None, [tmp_path / "a"])
    assert isinstance(alone["edge"], GateError) and calls == [1]  # a lone evaluation is validated once
    assert json.loads((tmp_path / "a" / f"{RESULTS_SUITE}.json").read_text())["subject"] == "m/edge"
