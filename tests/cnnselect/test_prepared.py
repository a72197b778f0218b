"""The prepared-model cache on its own: written aside and renamed, checked on reuse, a lost race resolved."""

import logging
from pathlib import Path

import numpy as np
import pytest

from cnnselect import prepared, stages
from evaluators.export import ParityResult
from evaluators.size import SizeResult

KEY = "k" * 32


def _prepare(final: Path, heldout: int = 4, key: str = KEY) -> prepared.Prepared:
    tmp = prepared.temp_dir(final)
    (tmp / prepared.FP32).mkdir()
    (tmp / prepared.FP32 / "model.onnx").write_bytes(b"graph")
    (tmp / prepared.FP32 / "model.onnx.data").write_bytes(b"\0" * 64)
    np.save(tmp / prepared.LOGITS, np.zeros((heldout, 10), np.float32))
    return prepared.Prepared(
        key=key,
        folder=tmp,
        size=SizeResult(1.0, 0.1, 0.2, 0.1, 0.2, 0.000069),
        parity=ParityResult(0.0, 1e-3, 1e-3, np.bool_(True)),  # type: ignore[arg-type]  # as check_parity returns it
        weights_digest="w" * 64,
        train_details={"seed": np.int64(0)},
        backbone_params={},
        heldout=heldout,
        pull_seconds=0.1,
        export_seconds=0.2,
        stages={"export": 1},
    )


def test_committed_is_found_complete_and_its_logits_are_mapped(tmp_path: Path) -> None:
    final = prepared.prepared_dir(tmp_path, "m", KEY)
    made = prepared.commit(_prepare(final), final)
    assert made.folder == final and not list(final.parent.glob(".*.tmp"))  # renamed into place, nothing left aside
    found = prepared.load(final, KEY, 4)
    assert found is not None and found.parity.ok is True and found.train_details == {"seed": 0}
    assert isinstance(found.reference_logits(), np.memmap)  # never read whole
    assert found.fp32.path == final / "fp32" / "model.onnx" and found.calibration_top1() is None
    found.save_calibration_top1(0.75)
    assert prepared.load(final, KEY, 4).calibration_top1() == 0.75  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda f: (f / "fp32" / "model.onnx.data").unlink(), "fp32/model.onnx.data is missing"),
        (lambda f: (f / prepared.MANIFEST).write_text("{not json"), "JSONDecodeError"),
        (lambda f: (f / prepared.MANIFEST).unlink(), "FileNotFoundError"),
    ],
)
def test_a_broken_folder_is_removed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil, reason: str
) -> None:
    final = prepared.prepared_dir(tmp_path, "m", KEY)
    prepared.commit(_prepare(final), final)
    spoil(final)
    with caplog.at_level(logging.WARNING, logger="cnnselect.prepared"):
        assert prepared.load(final, KEY, 4) is None
    assert reason in caplog.text and not final.exists()


def test_what_a_killed_preparation_left_is_removed_a_day_later(tmp_path: Path) -> None:
    import os
    import time

    final = prepared.prepared_dir(tmp_path, "m", KEY)
    old, recent = prepared.temp_dir(final), prepared.temp_dir(final)
    os.utime(old, (time.time() - prepared.STALE_S - 60,) * 2)
    prepared.commit(_prepare(final), final)
    assert not old.exists() and recent.exists()  # another preparation may still be writing a recent one


def test_another_split_or_key_is_not_reused(tmp_path: Path) -> None:
    final = prepared.prepared_dir(tmp_path, "m", KEY)
    prepared.commit(_prepare(final), final)
    assert prepared.load(final, KEY, 5) is None  # the held-out split changed under the same key: prepared again
    prepared.commit(_prepare(final), final)
    assert prepared.load(final, "x" * 32, 4) is None


def test_a_lost_race_uses_the_winners_folder(tmp_path: Path) -> None:
    final = prepared.prepared_dir(tmp_path, "m", KEY)
    first = prepared.commit(_prepare(final), final)
    late = _prepare(final)
    late_tmp = late.folder
    second = prepared.commit(late, final)
    assert second.folder == first.folder == final and not late_tmp.exists()


def test_stage_counts_are_summed_over_distinct_jobs() -> None:
    a, b = stages.StageCounts(), stages.StageCounts()
    a.ran("export")
    a.ran("latency_cpu")
    b.ran("latency_edge")
    ra, rb = a.to_json("m", KEY, reused=False), b.to_json("m", KEY, reused=True)
    # each job's record is logged on each of its runs: a job counted once however many runs carry it
    assert stages.summed_stages([ra, ra, rb]) == {"m": {"export": 1, "latency_cpu": 1, "latency_edge": 1}}


def test_a_second_preparer_waits_for_the_first(tmp_path: Path) -> None:
    import threading

    final = prepared.prepared_dir(tmp_path, "m", KEY)
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait()
        with prepared.lock(final):  # its own open file: flock holds it off until the first lets go
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with prepared.lock(final):
        inside.set()
        t.join(timeout=0.3)
        order.append("first")
    t.join(timeout=5)
    assert order == ["first", "second"]
