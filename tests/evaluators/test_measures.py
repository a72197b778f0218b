import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.accuracy import (
    accuracy,
    bootstrap_interval,
    confusion_matrix,
    per_class_accuracy,
    write_accuracy_artifacts,
)
from evaluators.latency import LatencySettings, batch_of, measure, measure_batches
from evaluators.size import count_flops, count_params


def test_accuracy_agrees_with_sklearn() -> None:
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=500)
    res = accuracy(logits, labels)
    assert res.top1 == pytest.approx(top_k_accuracy_score(labels, logits, k=1, labels=range(10)))
    assert res.top5 == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=range(10)))
    assert res.top1_ci_low <= res.top1 <= res.top1_ci_high


def test_nan_logits_never_count_as_correct() -> None:
    logits = np.full((4, 3), np.nan, dtype=np.float32)
    assert accuracy(logits, np.array([0, 1, 2, 0])).top1 == 0.0


def test_bootstrap_interval_narrows_with_n() -> None:
    small = bootstrap_interval(np.array([1.0, 0.0] * 25))
    large = bootstrap_interval(np.array([1.0, 0.0] * 2500))
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5


def test_latency_percentiles_and_bounds() -> None:
    res = measure(lambda: time.sleep(0.002), lambda: None, 1, LatencySettings(warmup=2, min_iters=40, min_seconds=0.1))
    m = res.to_metrics()
    assert len(res.samples_ms) >= 40
    assert 2.0 <= m["latency_p50_ms"] <= m["latency_p95_ms"] <= m["latency_p99_ms"]
    assert m["latency_p95_ub_ms"] >= m["latency_p95_ms"]
    assert m["throughput_ips"] == pytest.approx(1000 / m["latency_mean_ms"])


class _Workload:
    """A deterministic workload on a simulated clock: call n takes ``duration_s(n)`` seconds, no sleeping.

    The stopping and re-measure rules are tested on exact durations; a real sleep jitters under load.
    """

    def __init__(self, duration_s: Callable[[int], float]) -> None:
        self.now, self.calls, self.duration_s = 0.0, 0, duration_s

    def clock(self) -> float:
        return self.now

    def __call__(self) -> None:
        self.calls += 1
        self.now += self.duration_s(self.calls)


def test_an_unstable_measurement_is_taken_again(tmp_path: Path) -> None:
    # slows down call after call for 170 calls (the windows disagree), then settles at 1 ms
    work = _Workload(lambda n: 0.0005 * (1 + n / 20) if n <= 170 else 0.001)
    s = LatencySettings(warmup=2, min_iters=40, min_seconds=0.0, attempts=3)
    res = measure(work, lambda: None, 1, s, tmp_path / "l.lock", clock=work.clock)  # attempt 1 ends at 162 calls
    assert res.stable and res.attempts == 2
    assert res.to_metrics()["latency_attempts"] == 2.0
    assert res.percentile(50) == pytest.approx(1.0)  # the settled workload, not the ramp


def test_a_measurement_that_never_settles_is_flagged_after_the_attempts(tmp_path: Path) -> None:
    work = _Workload(lambda n: 0.0005 * 1.02**n)  # 2% slower per call: the last windows never agree within 10%
    s = LatencySettings(warmup=0, min_iters=20, min_seconds=0.0, attempts=2)
    res = measure(work, lambda: None, 1, s, tmp_path / "l.lock", clock=work.clock)
    assert not res.stable and res.attempts == 2
    assert res.to_metrics()["latency_stable"] == 0.0


def test_two_measurements_never_overlap(tmp_path: Path) -> None:
    active, overlaps = [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with lock:
            active[0] += 1
            overlaps[0] = max(overlaps[0], active[0])
        time.sleep(0.001)
        with lock:
            active[0] -= 1

    s = LatencySettings(warmup=1, min_iters=30, min_seconds=0.05)
    threads = [threading.Thread(target=measure, args=(work, lambda: None, 1, s, tmp_path / "l.lock")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1


def test_flop_counter_counts_macs_of_a_conv() -> None:
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    # reference: each of the 8*32*32 outputs needs 3*3*3 multiply-accumulates
    assert count_flops(conv, 32) == 2 * 8 * 32 * 32 * 27
    assert count_params(conv) == 8 * 3 * 3 * 3


def test_resnet18_size_matches_published() -> None:
    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.size import measure_size

    entry = get_entry("resnet18")
    s = measure_size(create_model(entry, 1000), 224, entry.input_size, 1)
    assert s.params_m == pytest.approx(entry.published.params_m, rel=0.005)
    assert s.gmacs == pytest.approx(entry.published.gmacs, rel=0.02)
    assert s.gflops == pytest.approx(2 * s.gmacs)


def test_confusion_and_per_class_agree_with_sklearn() -> None:
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=300)
    logits = rng.normal(size=(300, 6)).astype(np.float32)
    logits[np.arange(300), labels] += 1.0  # better than chance, unequal per class
    cm = confusion_matrix(logits, labels, 6)
    np.testing.assert_array_equal(cm, sk_confusion(labels, logits.argmax(1), labels=range(6)))
    np.testing.assert_allclose(per_class_accuracy(cm, labels), recall_score(labels, logits.argmax(1), average=None))


def test_per_class_counts_nan_rows_as_wrong_and_absent_classes_as_nan() -> None:
    logits = np.array([[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan], [0.0, 1.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    cm = confusion_matrix(logits, labels, 3)
    assert cm.sum() == 2  # the NaN row is in no column
    acc = per_class_accuracy(cm, labels)
    assert acc[0] == 0.5 and acc[1] == 1.0 and np.isnan(acc[2])


def test_accuracy_artifacts_are_a_png_and_a_csv(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(4), 5)
    logits = np.eye(4, dtype=np.float32)[labels]
    logits[labels == 3] = np.eye(4, dtype=np.float32)[0]  # class 3 always predicted as 0
    files, extra = write_accuracy_artifacts(logits, labels, ("a", "b", "c", "d"), tmp_path, "title")
    assert files["confusion_matrix"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = files["per_class_accuracy"].read_text().splitlines()
    assert (
        lines[0] == "class,support,correct,accuracy" and lines[4] == "d,5,0,0.000000" and lines[1] == "a,5,5,1.000000"
    )
    assert extra == {"top1_worst_class": 0.0}


def test_latency_at_a_larger_batch_has_suffixed_metrics(tmp_path: Path) -> None:
    seen: list[int] = []
    s = LatencySettings(warmup=1, min_iters=10, min_seconds=0.0, large_batch=8)
    m = measure_batches(lambda b: seen.append(len(b)), lambda: None, np.zeros((3, 3, 4, 4), np.float32), s)
    assert set(seen) == {1, 8}  # 3 images repeated up to a batch of 8
    assert m["throughput_ips_b8"] == pytest.approx(8000 / m["latency_mean_ms_b8"])
    assert m["latency_p95_ub_ms_b8"] >= m["latency_p95_ms_b8"] and "latency_p95_ms" in m
    off = measure_batches(lambda b: None, lambda: None, np.zeros((1, 1)), LatencySettings(1, 5, 0.0, large_batch=0))
    assert not any(k.endswith("_b8") for k in off)


def test_latency_batch_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="use 0 .off. or a batch size of at least 2"):
        LatencySettings(large_batch=1)
    with pytest.raises(ValueError, match="no images"):
        batch_of(np.zeros((0, 3)), 4)
    assert batch_of(np.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_attention_matmuls_are_counted_and_the_model_is_left_fused() -> None:
    """FlopCounterMode has no formula for the fused CPU attention kernel: counted unfused, QK^T and AV add up."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model("test_vit").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 160, 160))
    fused = counter.get_total_flops()
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    attention = 2 * 2 * tokens**2 * model.embed_dim * len(model.blocks)  # two matmuls, 2 FLOPs per MAC
    assert count_flops(model, 160) - fused == attention
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_the_confusion_picture_colours_each_cell_by_its_count() -> None:
    from evaluators.accuracy import confusion_picture

    cm = np.array([[9, 0], [3, 0]])
    img = confusion_picture(cm, ("cat", "dog"), "t").convert("RGB")
    bright = [sum(px) for px in img.getdata()]
    darkest, lightest = min(bright), max(bright)
    assert darkest < 250 and lightest == 3 * 255  # a dark cell (the 9) and the white background
    # the 9 is the darkest cell, the empty column the lightest blue: find the cells by colour, not by position
    grid = np.asarray(img)
    dark = (grid.sum(axis=2) < 250).nonzero()
    pale = (np.abs(grid.astype(int) - [247, 251, 255]).sum(axis=2) == 0).nonzero()
    assert dark[0].size > 100 and pale[0].size > 2 * 100  # one dark cell's square, two empty cells' squares
    assert dark[1].max() < pale[1].max()  # the dark cell is left of the empty column


# mobilenetv3_small_050: a real architecture whose meta pass takes the shortcuts (in-place hardswish_ and relu_, eval
# batch norm) beside out-of-place ones (the squeeze-excite gates), at 1.5 M parameters
@pytest.mark.parametrize(
    "arch", ["test_resnet", "test_efficientnet", "test_convnext", "test_vit", "test_byobnet", "mobilenetv3_small_050"]
)
def test_the_flop_count_is_flop_counter_modes_total(arch: str, caplog: pytest.LogCaptureFixture) -> None:
    """The same formulas as ``FlopCounterMode`` on real tensors, without its per-module tracking and on the meta device:
    the totals agree exactly."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    from evaluators.size import unfused_attention

    model = timm.create_model(arch).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), unfused_attention(model), counter:
        model(torch.zeros(1, 3, 64, 64))
    with caplog.at_level(logging.DEBUG, logger="evaluators.size"):
        assert counter.get_total_flops() > 0 and count_flops(model, 64) == counter.get_total_flops()
    assert "counted on real tensors" not in caplog.text  # the meta pass answered
    # counted on meta tensors: the model keeps its own weights, on the CPU, in eval mode
    assert all(p.device.type == "cpu" for p in model.parameters()) and not model.training


def test_the_meta_pass_skips_only_in_place_ops_that_keep_their_inputs_shape() -> None:
    from evaluators.size import _writes_its_input

    aten = torch.ops.aten
    for op in (aten.hardswish_.default, aten.relu_.default, aten.hardtanh_.default, aten.add_.Tensor):
        assert _writes_its_input(op), op  # hardswish_ is not tagged pointwise: the inplace tag decides
    for op in (aten.resize_.default, aten.t_.default, aten.squeeze_.default, aten.hardswish.default, aten.add.Tensor):
        assert not _writes_its_input(op), op  # they change the shape or strides, or write no input
