"""A cold ``get_best`` computed in the store agrees with the brute-force oracle over the same store's candidates."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest
from mlflow import MlflowClient

from registry import NoCandidatesError, NoFeasibleModelError, names
from registry.client import Registry
from registry.constraints import Constraints
from registry.selection import select
from registry.stores import pushdown

FAMILIES = ["resnet", "efficientnet", "mobilenetv3"]


def messy_evaluation(
    rng: random.Random, i: int, n: int, base: dict[str, str]
) -> tuple[dict[str, str], dict[str, float]]:
    """Evaluation ``i`` of ``n``: its tags (over ``base``) and metrics, with what a store can hold: ties, NaN/inf,
    missing metrics, failed parity, other runners, batch sizes and fingerprints, failed evaluations."""
    top1 = round(rng.uniform(0.5, 1.0), 2)  # rounded: ties on the objective must break the same way
    lat = round(rng.uniform(0.5, 30), 1)
    metrics: dict[str, float] = {
        "top1": top1,
        "top1_ci_low": top1 - rng.choice([0.0, 0.01, 0.05]),
        "latency_p95_ms": lat,
        "latency_p95_ub_ms": lat * rng.choice([1.0, 1.1]),
        "latency_p50_ms": lat * 0.8,
        "params_m": rng.choice([1.0, 5.0, 25.0]),
        "size_mb": rng.choice([4.0, 20.0, 100.0]),
        "gmacs": rng.choice([0.1, 1.0, 4.0]),
        "memory_rss_mb": rng.choice([10.0, 50.0]),
        "top1_drop_vs_fp32": rng.choice([-0.01, 0.0, 0.02]),
        "onnx_parity_ok": rng.choice([1.0, 1.0, 1.0, 0.0]),
    }
    odd = rng.random()
    if odd < 0.08:
        del metrics[rng.choice(sorted(metrics))]  # unmeasured
    elif odd < 0.16:
        metrics[rng.choice(sorted(metrics))] = rng.choice([float("nan"), float("inf")])
    runner = rng.choice(["cpu", "cpu", "cpu", "edge"])
    tags = {
        **base,
        names.TAG_VARIANT: f"v{rng.randint(0, 6)}",
        names.TAG_FAMILY: rng.choice(FAMILIES),
        names.TAG_RUNNER: runner,
        names.TAG_PRECISION: "int8" if runner == "edge" else "fp32",
        names.TAG_FINGERPRINT: "fp-new" if i > n // 3 else "fp-old",  # the newest measured is fp-new
        names.TAG_BATCH_SIZE: rng.choice(["1", "1", "1", "8"]),
        names.TAG_STATUS: names.STATUS_OK if rng.random() > 0.05 else "failed",
    }
    return tags, metrics


def seed_messy_versions(reg: Registry, add_version: Any, ds: str, n: int, rng: random.Random) -> None:
    """``n`` versions of :func:`messy_evaluation`, a few of them deleted."""
    add_version(ds, "seed", top1=0.5)
    client = MlflowClient(reg.tracking_uri)
    model = names.registered_model_name(ds)
    seed = client.get_model_version(model, "1")
    base = dict(seed.tags)
    # a tracking server checks a `models:/m-...` source against the LoggedModel named with it
    logged = (seed.model_id or seed.source.rsplit("/", 1)[-1]) if reg.tracking_uri.startswith("http") else None
    for i in range(n):
        tags, metrics = messy_evaluation(rng, i, n, base)
        tags = names.version_tags(tags, metrics)
        mv = client.create_model_version(model, seed.source, run_id=seed.run_id, tags=tags, model_id=logged)
        if rng.random() < 0.04:
            client.delete_model_version(model, mv.version)


def random_constraints(ds: str, rng: random.Random) -> Constraints:
    objective = rng.choice(["top1", "latency", "size", "weighted"])
    pick = rng.choice
    return Constraints(
        dataset=ds,
        target=pick(["cpu", "cpu", "edge"]),
        batch_size=pick([1, 1, 8]),
        fingerprint=pick([None, None, "fp-old", "fp-unknown"]),
        latency_percentile=pick([95, 95, 50]),
        max_latency_ms=pick([None, 5.0, 15.0, 25.0]),
        min_top1=pick([None, 0.6, 0.8, 0.95]),
        max_params_m=pick([None, 5.0, 30.0]),
        max_size_mb=pick([None, 20.0]),
        max_gmacs=pick([None, 1.0]),
        max_peak_memory_mb=pick([None, 20.0]),
        max_top1_drop=pick([None, 0.0, 0.01]),
        families=pick([None, None, ("resnet",), ("resnet", "mobilenetv3")]),
        objective=objective,
        weights=(
            {"top1": pick([0.0, 100.0]), "latency": pick([0.5, 1.0]), "size": pick([0.0, 0.1]), "gmacs": pick([0, 2.0])}
            if objective == "weighted"
            else None
        ),
        tie_breakers=pick([None, ("size",), ("gmacs", "latency")]) if objective == "top1" else None,
    )


def agrees_with_the_oracle(reg: Registry, model: str, candidates: list, k: Constraints, trial: int) -> Any:
    """The in-store answer for ``k``, asserted equal to the brute-force selection over ``candidates``."""
    try:
        want: str | None = select(candidates, k)[0].candidate.version
    except (NoCandidatesError, NoFeasibleModelError):
        want = None
    got = reg.index.best_in_store(model, k)
    assert (got[0].version if got else None) == want, (trial, k)
    return got


def test_best_in_store_equals_the_oracle_on_300_random_constraint_sets(
    shared_store, add_version, ds: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(7)
    reg = Registry(settings=shared_store, ttl_s=3600)
    seed_messy_versions(reg, add_version, ds, 90, rng)
    model = names.registered_model_name(ds)
    candidates = reg.candidates(ds)  # the index: what the oracle judges
    answered = 0
    for trial in range(300):
        k = random_constraints(ds, rng)
        monkeypatch.setattr(pushdown, "PAGE", rng.choice([2, 5, 32]))  # small pages: the stopping rule across pages
        monkeypatch.setattr(pushdown, "MAX_PAGES", 100)
        got = agrees_with_the_oracle(reg, model, candidates, k, trial)
        if got is not None:
            assert got[1].label == "feasible" and got[1].candidate is got[0]
            answered += 1
    assert 30 <= answered <= 270  # both outcomes were exercised, not a degenerate draw
    assert not [r.message for r in caplog.records if "loading the index" in r.message]  # the store answered each
    assert reg.index.store_queries == {"sql": 300}


def _edit_card(client: MlflowClient, model: str, version: str, field: str, text: str) -> None:
    """A card edited by hand: one of its fields replaced."""
    parts = client.get_model_version(model, version).tags[names.TAG_CARD].split(" ")
    parts[names.CARD_FIELDS.index(field)] = text
    client.set_model_version_tag(model, version, names.TAG_CARD, " ".join(parts))


def test_a_version_without_a_readable_card_is_no_candidate_in_the_store_nor_the_index(
    shared_store, add_version, ds: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Versions registered before this card format, or cards edited by hand: never silently wrong figures."""
    rng = random.Random(11)
    reg = Registry(settings=shared_store, ttl_s=3600)
    seed_messy_versions(reg, add_version, ds, 40, rng)
    model = names.registered_model_name(ds)
    client = MlflowClient(reg.tracking_uri)
    live = [c.version for c in reg.candidates(ds)]
    gone, odd = live[3], live[5]
    client.delete_model_version_tag(model, gone, names.TAG_CARD)  # as if registered before it
    _edit_card(client, model, odd, "top1", "0.990")  # not repr(float): Python refuses it, SQL would read 0.99
    reg.invalidate(ds)
    with caplog.at_level(logging.WARNING, logger="registry.index"):
        candidates = reg.candidates(ds)
    assert {c.version for c in candidates} == set(live) - {gone, odd}
    (said,) = [r.getMessage() for r in caplog.records if "not candidates" in r.getMessage()]
    assert f"2 version(s) without a readable {names.TAG_CARD}" in said and f"v{gone}" in said and f"v{odd}" in said
    caplog.clear()
    reg.invalidate(ds)
    with caplog.at_level(logging.WARNING, logger="registry.index"):
        reg.candidates(ds)  # the same versions again (an HTTP store reloads at every TTL): said once
    assert not [r for r in caplog.records if "not candidates" in r.getMessage()]
    monkeypatch.setattr(pushdown, "PAGE", 3)
    monkeypatch.setattr(pushdown, "MAX_PAGES", 100)
    for trial in range(60):
        agrees_with_the_oracle(reg, model, candidates, random_constraints(ds, rng), trial)
    assert reg.index.store_queries == {"sql": 60}  # SQLite as PostgreSQL: split_part registered on its connections


def test_add_cards_writes_each_card_from_its_run_and_prune_drops_the_old_tags(
    shared_store, tiny_onnx, ds: str, caplog
) -> None:
    """A version registered the old way (a cnnselect.metric.* tag per metric, the v1 card, digests) is migrated."""
    from registry.cards import add_cards, prune_tags
    from tests.registry.conftest import log_one

    log_one(shared_store, tiny_onnx, ds, "a", top1=0.90)
    b = log_one(shared_store, tiny_onnx, ds, "b", top1=0.95)
    model = names.registered_model_name(ds)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    registered = client.get_model_version(model, b.version).tags
    want = registered[names.TAG_CARD]
    client.delete_model_version_tag(model, b.version, names.TAG_CARD)
    old = {names.TAG_PREFIX + "metric.top1": "0.95", "cnnselect.card.v1": "cpu/fp32/1/all fp1 x 0.95"}
    old |= {names.TAG_DATASET_DIGEST: "d" * 64, names.promotion_tag("vision", "run_id"): "r", "mine": "kept"}
    for key, value in old.items():
        client.set_model_version_tag(model, b.version, key, value)
    k = Constraints(dataset=ds)
    with caplog.at_level(logging.WARNING, logger="registry.index"):
        assert Registry(settings=shared_store).candidates(ds)[0].variant == "a"  # b is no candidate without its card
    assert any(f"v{b.version}" in r.getMessage() and "add-cards" in r.getMessage() for r in caplog.records)
    assert Registry(settings=shared_store).get_best(k).candidate.variant == "a"

    assert prune_tags(shared_store, ds) == 0  # a version without its card keeps every tag
    assert add_cards(shared_store, ds) == 1 and add_cards(shared_store, ds) == 0
    assert client.get_model_version(model, b.version).tags[names.TAG_CARD] == want
    assert prune_tags(shared_store, ds) == 3 and prune_tags(shared_store, ds) == 0
    tags = client.get_model_version(model, b.version).tags
    assert set(tags) == {*registered, names.promotion_tag("vision", "run_id"), "mine"}
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    assert reg.get_best(k).candidate.variant == "b"
    assert reg.index.store_queries == {"sql": 1}

    _edit_card(client, model, b.version, "top1", repr(0.5))  # edited by hand: the run says what was measured
    assert add_cards(shared_store, ds) == 1
    assert client.get_model_version(model, b.version).tags[names.TAG_CARD] == want


def test_the_pipeline_registers_each_version_with_few_tags_and_its_card(shared_store, tiny_onnx, ds: str) -> None:
    from evaluators.images import Preprocess
    from tests.registry.conftest import BASE, log_one

    prep = Preprocess(32, "bicubic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 0.875)
    extra = {"top5": 0.99, "latency_p99_ms": 4.0, "latency_mean_ms": 1.5}
    logged = log_one(shared_store, tiny_onnx, ds, "a", preprocess=prep.to_dict(), top1=0.9, **extra)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    mv = client.get_model_version(names.registered_model_name(ds), str(logged.version))
    assert set(mv.tags) == set(names.VERSION_TAGS) and len(mv.tags) <= 20
    assert not [k for k in mv.tags if k.startswith(names.TAG_PREFIX + "metric.")]
    run = client.get_run(logged.run_id)
    assert run.data.metrics == {**BASE, "top1": 0.9, **extra}  # every metric stays on the run
    card = names.read_card(mv.tags[names.TAG_CARD])
    assert card is not None and (card.runner, card.precision, card.batch_size, card.threads, card.family) == (
        "cpu", "fp32", 1, "all", "efficientnet"
    )  # fmt: skip
    assert card.metrics == {m: v for m, v in run.data.metrics.items() if m in names.CARD_METRICS}  # exact
    assert "**a** on `cpu` (fp32)" in mv.description and "0.900" in mv.description
    reg = Registry(settings=shared_store)
    answer = reg.get_best(Constraints(dataset=ds))
    assert answer.metrics == card.metrics and reg.preprocessing(answer.candidate) == prep  # what production applies


def test_cold_get_best_answers_in_the_store_then_follows_new_versions(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.90)
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    k = Constraints(dataset=ds, max_latency_ms=10)
    model = names.registered_model_name(ds)
    first = reg.get_best(k)
    assert first.candidate.variant == "a" and not reg.index.loaded(model)  # no version list was loaded
    assert reg.get_best(k) is first  # nothing changed: the same answer, from memory after one watermark query
    add_version(ds, "b", top1=0.95)
    assert reg.get_best(k).candidate.variant == "b"
    add_version(ds, "c", top1=0.99, latency_p95_ub_ms=11.0)  # point estimate 2.0 passes, its bound does not
    best = reg.get_best(k)
    assert best.candidate.variant == "b" and reg.index.loads == 0
    labels = {v.candidate.variant: v.label for v in best.verdicts}  # the pool is read on first use
    assert labels == {"a": "feasible", "b": "feasible", "c": "marginal"} and reg.index.loaded(model)
    assert reg.get_best(k).candidate.variant == "b"  # now from the index


def test_a_value_the_store_cannot_read_falls_back_to_the_index(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.8)
    odd = add_version(ds, "odd", top1=0.9)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    _edit_card(client, names.registered_model_name(ds), odd, "params_m", "1_000")  # PostgreSQL refuses the cast
    reg = Registry(settings=shared_store)
    assert reg.get_best(Constraints(dataset=ds, max_params_m=10)).candidate.variant == "a"  # odd: no candidate
    assert {c.variant for c in reg.candidates(ds)} == {"a"}


def test_a_prefetching_registry_loads_the_index_in_the_background(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.90)
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0, prefetch=True)  # what registry.get_best() uses
    k = Constraints(dataset=ds)
    model = names.registered_model_name(ds)
    assert reg.get_best(k).candidate.variant == "a"  # answered in the store; the index loads behind it
    deadline = time.monotonic() + 30
    while not reg.index.loaded(model) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reg.index.loaded(model) and reg.index.loads == 1 and not reg.index.prefetching(model)
    add_version(ds, "b", top1=0.95)
    assert reg.get_best(k).candidate.variant == "b"
    assert (reg.index.loads, reg.index.deltas) == (1, 1)  # the change came as a delta, not another in-store query
