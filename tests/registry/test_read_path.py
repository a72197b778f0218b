"""The production read path against real stores: the index, its refresh, what it must never return, threads."""

import random
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from registry import NoFeasibleModelError, UnknownTeamError, names
from registry.client import Registry, local_dir
from registry.constraints import Constraints
from registry.selection import Candidate, RankedPool, feasible_in_rank_order, judge, rank, select


def test_index_answers_from_memory_within_ttl_and_reloads_on_change(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.90)
    cached = Registry(settings=shared_store, ttl_s=3600)
    fresh = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    for reg in (cached, fresh):
        reg.candidates(ds)  # the index loaded: get_best answers from it (a cold one is computed in the store)
    k = Constraints(dataset=ds)
    assert cached.get_best(k).candidate.variant == fresh.get_best(k).candidate.variant == "a"
    loads, deltas = fresh.index.loads, fresh.index.deltas
    for _ in range(3):
        fresh.get_best(k)
    assert (fresh.index.loads, fresh.index.deltas) == (loads, deltas)  # TTL expired, watermark still: no reading

    add_version(ds, "b", top1=0.95)
    assert fresh.get_best(k).candidate.variant == "b"
    assert (fresh.index.loads, fresh.index.deltas) == (loads, deltas + 1)  # only the changed versions read
    assert cached.get_best(k).candidate.variant == "a"  # within its TTL: memory only, by design
    cached.invalidate(ds)
    assert cached.get_best(k).candidate.variant == "b"


def test_never_deleted_missing_artifact_nan_or_other_fingerprint(
    shared_store, add_version, ds: str, tmp_path: Path
) -> None:
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
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


@pytest.mark.parametrize("reload", [False, True], ids=["in-store", "index-reloads"])
def test_many_readers_while_the_index_refreshes_get_only_valid_consistent_answers(
    shared_store, add_version, ds: str, reload: bool
) -> None:
    """8 readers (TTL 0: every call checks the watermark), one thread dropping what the registry holds (and, with
    ``reload``, loading the index again, so readers go back and forth between the index and answers computed in the
    store), a writer adding better versions and deleting the best: every answer is a feasible, registered,
    self-consistent candidate, and no call that starts after the deletion is visible returns the deleted version."""
    top1 = {"first": 0.80, "second": 0.90, "third": 0.95}
    registered = {add_version(ds, "first", top1=top1["first"]): "first"}
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    k = Constraints(dataset=ds, min_top1=0.5)
    model = names.registered_model_name(ds)
    seen: list[tuple[float, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                seen.append((started, reg.get_best(k)))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    def drop() -> None:
        while not stop.wait(0.05):
            reg.invalidate(ds)
            if reload:
                reg.candidates(ds)

    def answered(variant: str, after: float = 0.0) -> None:  # readers saw this state before the writer moves on
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(a.candidate.variant == variant and started > after for started, a in list(seen)) >= 8:
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=read) for _ in range(8)] + [threading.Thread(target=drop)]
    for t in threads:
        t.start()
    try:
        answered("first")
        for variant in ("second", "third"):
            registered[add_version(ds, variant, top1=top1[variant])] = variant
            answered(variant)
        third = next(v for v, name in registered.items() if name == "third")
        MlflowClient(reg.tracking_uri).delete_model_version(model, third)
        deleted_visible = time.monotonic()  # committed: any call starting from now reads the store again (TTL 0)
        answered("second", after=deleted_visible)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(seen) > 20
    for _, a in seen:
        c = a.candidate
        assert a.verdict.candidate is c and a.verdict.label == "feasible" and c in a.pool
        assert registered[c.version] == c.variant and c.metrics["top1"] == top1[c.variant]
    assert {a.candidate.variant for _, a in seen} >= {"first", "third", "second"}
    late = [a.candidate.variant for started, a in seen if started > deleted_visible]
    assert late and set(late) == {"second"}
    assert reg.get_best(k).candidate.variant == "second"


def test_invalidate_during_a_refresh_is_not_undone_by_it(
    shared_store, add_version, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that read the store before a write and finishes after the writer's invalidate() must not hand the
    writer its stale snapshot (promotion invalidates, then reads back inside its lock)."""
    add_version(ds, "before", top1=0.80)
    reg = Registry(settings=shared_store, ttl_s=3600)
    read, finish = threading.Event(), threading.Event()
    load = reg.index._load

    def slow_load(model: str, *args: Any) -> Any:
        got = load(model, *args)
        if not read.is_set():
            read.set()
            finish.wait(30)
        return got

    monkeypatch.setattr(reg.index, "_load", slow_load)
    reader = threading.Thread(target=reg.candidates, args=(ds,))
    reader.start()
    assert read.wait(30)
    add_version(ds, "after", top1=0.90)
    reg.invalidate(ds)  # the writer wants to read its own write back
    finish.set()
    reader.join()
    assert {c.variant for c in reg.candidates(ds)} == {"before", "after"}


@pytest.mark.parametrize("path", ["index", "in-store"])
def test_a_slow_refresh_never_blocks_readers_and_runs_once(
    shared_store, add_version, ds: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Past the TTL, one refresh runs in the background while 8 readers keep getting the last answer at once, over
    many more TTLs than it lasts; once it is done the new version is answered.

    The one fake: the index's watermark read waits on an event before reading the real store. A real store is never
    slow on cue, and the watermark read is where every refresh (of the index, or of the answers computed in the
    store) starts: holding it holds the refresh, and counting its calls counts the refreshes.
    """
    add_version(ds, "first", top1=0.80)
    reg = Registry(settings=shared_store, ttl_s=0.02, stale_s=60)
    k, model = Constraints(dataset=ds), names.registered_model_name(ds)
    if path == "index":
        reg.candidates(ds)
    assert reg.get_best(k).candidate.variant == "first" and reg.index.loaded(model) == (path == "index")
    add_version(ds, "better", top1=0.95)
    release, calls = threading.Event(), []
    watermark = reg.index.store.watermark

    def slow_watermark(model_name: str) -> Any:
        calls.append(model_name)
        assert release.wait(60)
        return watermark(model_name)

    while reg.index.refreshing(model):  # on a loaded machine the TTL may have passed already: that refresh done
        time.sleep(0.005)
    monkeypatch.setattr(reg.index.store, "watermark", slow_watermark)
    started = reg.index.background_refreshes
    time.sleep(0.03)  # the TTL expired
    took: list[float] = []
    seen: list[str] = []

    def read() -> None:
        for _ in range(25):
            t = time.perf_counter()
            seen.append(reg.get_best(k).candidate.variant)
            took.append(time.perf_counter() - t)
            time.sleep(0.01)  # 25 calls over about 0.3 s: some 15 TTLs

    readers = [threading.Thread(target=read) for _ in range(8)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(30)
    assert not any(t.is_alive() for t in readers)  # every reader finished while the refresh was held
    assert set(seen) == {"first"} and len(seen) == 200
    assert statistics.median(took) < 0.005 and max(took) < 0.25, (statistics.median(took), max(took))
    assert calls == [model] and reg.index.refreshing(model) and reg.index.background_refreshes == started + 1
    release.set()
    deadline = time.monotonic() + 30
    while reg.index.refreshing(model) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not reg.index.refreshing(model)
    assert reg.get_best(k).candidate.variant == "better"


def test_past_stale_s_a_reader_waits_for_the_refresh(shared_store, add_version, ds: str) -> None:
    """``stale_s`` bounds how old an answer may be: past TTL + stale_s the reader refreshes and gets the new one."""
    add_version(ds, "first", top1=0.80)
    reg = Registry(settings=shared_store, ttl_s=0.01, stale_s=0.05)
    k = Constraints(dataset=ds)
    reg.candidates(ds)
    assert reg.get_best(k).candidate.variant == "first"
    add_version(ds, "better", top1=0.95)
    time.sleep(0.1)
    started = reg.index.background_refreshes  # on a loaded machine the first get_best may have been past the TTL
    assert reg.get_best(k).candidate.variant == "better" and reg.index.background_refreshes == started


def test_delta_refresh_reads_what_a_full_reload_reads(shared_store, add_version, ds: str) -> None:
    """New versions, a version whose card comes later, a deletion and an alias, each seen by a delta refresh
    exactly as a fresh full load sees it."""
    model = names.registered_model_name(ds)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    first = add_version(ds, "first", top1=0.80)
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    k = Constraints(dataset=ds)
    reg.candidates(ds)  # the index loaded (get_best alone would answer in the store)
    reg.get_best(k)  # a ranked pool cached: each delta carries it over
    loads = reg.index.loads

    def same_as_full_load() -> None:
        full = Registry(settings=shared_store, ttl_s=0, stale_s=0)
        got = [(c.version, c.variant, c.metrics, c.artifact_uri) for c in reg.candidates(ds)]
        assert got == [(c.version, c.variant, c.metrics, c.artifact_uri) for c in full.candidates(ds)]
        assert reg.index.snapshot(model).aliases == full.index.snapshot(model).aliases
        carried, built = reg.get_best(k), full.get_best(k)
        assert [c.version for c in carried.pool] == [c.version for c in built.pool]
        assert carried.candidate.version == built.candidate.version

    second = add_version(ds, "second", top1=0.90)
    same_as_full_load()
    seed = client.get_model_version(model, first)
    tags = {**seed.tags, names.TAG_VARIANT: "late"}
    run_id, card = tags.pop(names.TAG_RUN_ID), tags.pop(names.TAG_CARD)
    late = client.create_model_version(model, seed.source, run_id=seed.run_id, tags=tags).version
    same_as_full_load()
    assert "late" not in {c.variant for c in reg.candidates(ds)}  # not fully logged yet
    time.sleep(0.01)
    add_version(ds, "newer", top1=0.70)  # the newest update is no longer the late version's
    same_as_full_load()
    client.set_model_version_tag(model, late, names.TAG_RUN_ID, run_id)
    client.set_model_version_tag(model, late, names.TAG_CARD, card)  # no version timestamp moves for a tag
    same_as_full_load()
    assert "late" in {c.variant for c in reg.candidates(ds)}
    client.delete_model_version(model, second)
    same_as_full_load()
    client.set_registered_model_alias(model, "team-x", first)
    same_as_full_load()
    assert reg.index.loads == loads and reg.index.deltas >= 4  # every change above came in as a delta


def test_artifact_removed_after_a_warm_answer_is_never_answered_again(
    shared_store, add_version, ds: str, tmp_path: Path
) -> None:
    reg = Registry(settings=shared_store, ttl_s=3600)  # nothing reread from the store: the check alone must see it
    k = Constraints(dataset=ds)
    add_version(ds, "kept", top1=0.80)
    source = local_dir(reg.candidates(ds)[0].artifact_uri)
    assert source is not None and (Path(source) / "MLmodel").is_file()
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    add_version(ds, "removable", source=copy.as_uri(), top1=0.95)
    reg.invalidate(ds)
    assert reg.get_best(k).candidate.variant == "removable"
    assert reg.get_best(k).candidate.variant == "removable"  # warm
    shutil.rmtree(copy)
    assert reg.get_best(k).candidate.variant == "kept"


@pytest.mark.parametrize("objective", ["top1", "latency", "size", "weighted"])
def test_judging_in_rank_order_gives_what_judging_everything_gives(objective: str) -> None:
    """``get_best`` judges only until the first feasible candidate in rank order: the same as ranking every verdict."""
    rng = random.Random(objective)
    weights = {"top1": 100.0, "latency": 1.0} if objective == "weighted" else None
    for trial in range(200):
        k = Constraints(
            objective=objective,
            weights=weights,
            max_latency_ms=rng.choice([None, 5.0, 20.0]),
            min_top1=rng.choice([None, 0.7, 0.9]),
            max_size_mb=rng.choice([None, 50.0]),
        )
        pool = []
        for i in range(rng.randint(0, 40)):
            top1 = round(rng.uniform(0.5, 1.0), 2)  # rounded: ties on the objective happen and must break the same way
            metrics = {
                "top1": top1,
                "top1_ci_low": top1 - 0.01,
                "latency_p95_ms": round(rng.uniform(0.5, 30), 1),
                "size_mb": rng.choice([10.0, 40.0, 80.0]),
                "onnx_parity_ok": rng.choice([1.0, 1.0, 0.0]),
            }
            if rng.random() < 0.1:
                del metrics[rng.choice(sorted(metrics))]  # unmeasured: +inf cost, never feasible on what it lacks
            variant = f"v{rng.randint(0, 5)}"
            pool.append(Candidate("m", str(i + 1), "r", variant, "resnet", "cpu", "fp32", "fp", metrics))
        fast = [v.candidate.version for v in feasible_in_rank_order(pool, k)]
        oracle = [v.candidate.version for v in rank([judge(c, k) for c in pool], k) if v.label == "feasible"]
        assert fast == oracle, (trial, k)
        if oracle:
            assert select(pool, k)[0].candidate.version == fast[0]


@pytest.mark.parametrize("declared", [None, "fpA"])
def test_ranked_pool_carried_over_a_delta_equals_one_built_again(declared: str | None) -> None:
    """What a delta refresh does to each cached pool (versions re-read, deleted, added, a newer measurement on other
    hardware) gives the pool a full build gives, or None exactly when the target fingerprint may have moved."""
    rng = random.Random(declared)
    k = Constraints(min_top1=0.6, fingerprint=declared)

    def cand(version: int, created: int, fp: str, runner: str | None = None) -> Candidate:
        top1 = round(rng.uniform(0.5, 1.0), 2)
        metrics = {"top1": top1, "top1_ci_low": top1, "latency_p95_ms": 1.0, "size_mb": 1.0, "onnx_parity_ok": 1.0}
        runner = runner or rng.choice(["cpu", "cpu", "edge"])
        precision = "fp32" if runner == "cpu" else "int8"
        return Candidate("m", str(version), "r", f"v{version % 7}", "resnet", runner, precision, fp, metrics, 1,
                         created_ms=created)  # fmt: skip

    older, newest = cand(1, 10, "fpA", "cpu"), cand(2, 20, "fpB", "cpu")
    two = RankedPool.build([older, newest], k)
    assert two.fingerprint == (declared or "fpB")
    moved = two.updated([newest], [])  # the newest measurement gone: the target falls back to the older hardware
    if declared is None:
        assert moved is None and RankedPool.build([older], k).fingerprint == "fpA"
    else:
        assert moved is not None and [c.version for c in moved.candidates] == ["1"]

    current = {v: cand(v, v * 10, "fpA") for v in range(1, 60)}
    pool = RankedPool.build(current.values(), k)
    top, rebuilt = 60, 0
    for step in range(150):
        removed = {v for v in current if rng.random() < 0.05}
        reread = {v: cand(v, current[v].created_ms, current[v].fingerprint) for v in removed if rng.random() < 0.5}
        new = {}
        for _ in range(rng.randint(0, 3)):
            top += 1
            new[top] = cand(top, top * 10, "fpB" if rng.random() < 0.05 else pool.fingerprint or "fpA")
        before = {v: current.pop(v) for v in removed}
        current.update({**reread, **new})
        came = [*reread.values(), *new.values()]
        moved = pool.updated([before[v] for v in removed], came)
        truth = RankedPool.build(sorted(current.values(), key=lambda c: int(c.version)), k)
        if moved is None:
            assert declared is None, step  # a declared fingerprint never moves
            rebuilt += 1
            pool = truth
            continue
        assert moved.fingerprint == truth.fingerprint, step
        assert [c.version for c in moved.candidates] == [c.version for c in truth.candidates], step
        assert moved.keys == truth.keys
        pool = moved
    assert rebuilt < 40


def test_get_best_by_team_name(shared_store, add_version, ds: str, tmp_path: Path) -> None:
    add_version(ds, "a", top1=0.9)
    (tmp_path / "vision.yaml").write_text(f"name: vision\nconstraints: {{dataset: {ds}, min_top1: 0.5}}\n")
    reg = Registry(settings=shared_store, teams_dir=tmp_path)
    assert reg.get_best("vision").candidate.variant == "a"
    with pytest.raises(UnknownTeamError, match="Did you mean 'vision'"):
        reg.get_best("visoin")
