"""The production read path against real stores: the index, its refresh, what it must never return, threads."""

import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import NoFeasibleModelError, UnknownTeamError, names
from registry.client import Registry
from registry.constraints import Constraints


def test_index_answers_from_memory_within_ttl_and_reloads_on_change(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.90)
    cached = Registry(settings=shared_store, ttl_s=3600)
    fresh = Registry(settings=shared_store, ttl_s=0)
    k = Constraints(dataset=ds)
    assert cached.get_best(k).candidate.variant == fresh.get_best(k).candidate.variant == "a"
    loads = fresh.index.loads
    for _ in range(3):
        fresh.get_best(k)
    assert fresh.index.loads == loads  # TTL expired every time, but the watermark did not move: no reload

    add_version(ds, "b", top1=0.95)
    assert fresh.get_best(k).candidate.variant == "b" and fresh.index.loads == loads + 1
    assert cached.get_best(k).candidate.variant == "a"  # within its TTL: memory only, by design
    cached.invalidate(ds)
    assert cached.get_best(k).candidate.variant == "b"


def test_never_deleted_missing_artifact_nan_or_other_fingerprint(
    shared_store, add_version, ds: str, tmp_path: Path
) -> None:
    reg = Registry(settings=shared_store, ttl_s=0)
    k = Constraints(dataset=ds, min_top1=0.5)
    ok = add_version(ds, "ok", top1=0.80, top1_ci_low=0.78)
    gone = tmp_path / "gone"  # an artifact location with nothing in it (the files were removed)
    gone.mkdir()
    add_version(ds, "no_artifact", source=gone.as_uri(), top1=0.99, top1_ci_low=0.98)
    add_version(ds, "nan", top1=float("nan"), top1_ci_low=0.97)
    add_version(ds, "deleted", top1=0.98, top1_ci_low=0.97)
    deleted = reg.get_best(k).candidate.version
    MlflowClient(reg.tracking_uri).delete_model_version(names.registered_model_name(ds), deleted)
    add_version(ds, "other_fp", fingerprint="fp-old", top1=0.97, top1_ci_low=0.96)
    latest = add_version(ds, "same_fp_latest", top1=0.70, top1_ci_low=0.68)

    best = reg.get_best(k)
    assert best.candidate.variant == "ok" and best.candidate.version == ok
    seen = {c.variant for c in reg.candidates(ds)}
    assert "deleted" not in seen and "no_artifact" in seen  # indexed, but never answered
    assert "top1" not in next(c for c in reg.candidates(ds) if c.variant == "nan").metrics
    assert {v.candidate.variant for v in best.verdicts} >= {"ok", "same_fp_latest"}
    assert "other_fp" not in {v.candidate.variant for v in best.verdicts}  # never compared across fingerprints
    assert reg.get_best(k.model_copy(update={"fingerprint": "fp-old"})).candidate.variant == "other_fp"
    with pytest.raises(NoFeasibleModelError):
        reg.get_best(Constraints(dataset=ds, min_top1=0.9))
    assert latest


def test_concurrent_readers_while_a_writer_adds(shared_store, add_version, ds: str) -> None:
    add_version(ds, "first", top1=0.80)
    reg = Registry(settings=shared_store, ttl_s=0)
    k = Constraints(dataset=ds)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(reg.get_best(k).candidate.variant)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    add_version(ds, "second", top1=0.90)
    add_version(ds, "third", top1=0.95)
    reg.invalidate(ds)
    final = reg.get_best(k).candidate.variant
    stop.set()
    for t in readers:
        t.join()
    assert errors == [] and final == "third"
    assert set(seen) <= {"first", "second", "third"} and seen


def test_get_best_by_team_name(shared_store, add_version, ds: str, tmp_path: Path) -> None:
    add_version(ds, "a", top1=0.9)
    (tmp_path / "vision.yaml").write_text(f"name: vision\nconstraints: {{dataset: {ds}, min_top1: 0.5}}\n")
    reg = Registry(settings=shared_store, teams_dir=tmp_path)
    assert reg.get_best("vision").candidate.variant == "a"
    with pytest.raises(UnknownTeamError, match="Did you mean 'vision'"):
        reg.get_best("visoin")
