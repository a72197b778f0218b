"""A cold ``get_best`` over HTTP from LoggedModels (``registry.logged``) gives the index's answer, or says "not sure".

A real ``mlflow server`` (the HTTP read path's fixture); every version its own LoggedModel, as ``log_evaluation``
leaves it, with what the store can hold (ties, missing and non-finite metrics, failed parity and evaluations, other
runners, batch sizes and fingerprints, deleted versions); then the ways a store can break the rule it relies on.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from registry import names
from registry.client import Registry
from registry.constraints import Constraints
from registry.settings import Settings
from registry.stores import logged
from tests.registry.conftest import log_one
from tests.registry.test_pushdown import messy_evaluation, random_constraints
from tests.registry.test_read_path_http import (
    http_store,  # noqa: F401 - the fixture: one server for this module
    settles_as_the_oracle,
)

pytestmark = pytest.mark.integration


def evaluation(client: MlflowClient, ds: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
    """One more evaluation as ``log_evaluation`` leaves it: its own run and LoggedModel (tags, metrics linked to
    both), one version registered from it with the card written from the same (the server links the two)."""
    exp = client.get_experiment_by_name(names.experiment_name(ds)).experiment_id
    run_id = client.create_run(exp).info.run_id
    tags = {**tags, names.TAG_RUN_ID: run_id}
    lm_tags = {k: v for k, v in tags.items() if k not in (names.TAG_STATUS, names.TAG_RUN_ID, names.TAG_CARD)}
    lm = client.create_logged_model(exp, name="model", source_run_id=run_id, tags=lm_tags)
    now = int(time.time() * 1000)
    finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}  # log_evaluation drops the rest
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0, run_id=run_id, model_id=lm.model_id)
                                      for k, v in finite.items()])  # fmt: skip
    client.finalize_logged_model(lm.model_id, "READY")
    model = names.registered_model_name(ds)
    mv = client.create_model_version(model, f"models:/{lm.model_id}", run_id=run_id,
                                     tags=names.version_tags(tags, metrics), model_id=lm.model_id)  # fmt: skip
    return str(mv.version)


def seed_evaluations(store: Settings, tiny_onnx: Any, ds: str, n: int, rng: random.Random) -> MlflowClient:
    """``n`` evaluations with what the store can hold, each its own LoggedModel (``seed_messy_versions``' mix)."""
    log_one(store, tiny_onnx, ds, "seed", top1=0.5)
    client = MlflowClient(store.resolved_tracking_uri)
    model = names.registered_model_name(ds)
    seed = client.get_model_version(model, "1")
    base = {k: v for k, v in seed.tags.items() if k != names.TAG_CARD}
    for i in range(n):
        tags, metrics = messy_evaluation(rng, i, n, base)
        version = evaluation(client, ds, tags, metrics)
        if rng.random() < 0.04:
            client.delete_model_version(model, version)
    return client


@pytest.fixture(scope="module")
def evaluations(http_store: Settings, tiny_onnx: Any) -> tuple[str, MlflowClient]:  # noqa: F811
    ds = "logged-oracle"
    return ds, seed_evaluations(http_store, tiny_onnx, ds, 70, random.Random(11))


def test_the_logged_answer_is_the_oracles_on_150_random_constraint_sets(
    http_store: Settings,  # noqa: F811
    evaluations: tuple[str, MlflowClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ds, _ = evaluations
    rng = random.Random(3)
    oracle = Registry(settings=http_store, ttl_s=3600)
    candidates, model = oracle.candidates(ds), names.registered_model_name(ds)
    cold = Registry(settings=http_store, ttl_s=3600)
    settled = 0
    for trial in range(150):
        k = random_constraints(ds, rng)
        monkeypatch.setattr(logged, "FIRST_PAGE", rng.choice([1, 2, 8]))  # small pages: the rule across pages
        monkeypatch.setattr(logged, "PAGE", rng.choice([2, 5, 32]))
        monkeypatch.setattr(logged, "MAX_PAGES", 100)
        settled += settles_as_the_oracle(cold, model, candidates, k, trial)
        if k.objective == "weighted":
            assert logged.settle(cold.client, model, k) is None
    assert settled >= 60  # most single-metric sets settled from the LoggedModels
    assert cold.index.loads == 0


def test_weighted_objectives_and_host_targets_are_left_to_the_point(
    http_store: Settings,  # noqa: F811
    evaluations: tuple[str, MlflowClient],
) -> None:
    ds, client = evaluations
    model = names.registered_model_name(ds)
    weighted = Constraints(dataset=ds, objective="weighted", weights={"top1": 100.0, "latency": 1.0})
    assert logged.settle(client, model, weighted) is None
    assert logged.settle(client, model, Constraints(dataset=ds, target="cpu-host")) is None
    assert logged.settle(client, model, Constraints(dataset=ds, min_top1=0.6)) is not None


def _card_with(tags: dict[str, str], **figures: float) -> str:
    parts = tags[names.TAG_CARD].split(" ")
    for metric, value in figures.items():
        parts[names.CARD_FIELDS.index(metric)] = repr(value)
    return " ".join(parts)


def test_a_card_that_disagrees_or_a_shared_logged_model_falls_back_to_the_index(
    http_store: Settings,  # noqa: F811
    tiny_onnx: Any,
) -> None:
    """A LoggedModel read whose version's card is not its figures: not sure. A LoggedModel with a second version
    (registered again from it, with another card): not sure, wherever it ranks. Each time the index's answer."""
    ds = "logged-broken"
    client = seed_evaluations(http_store, tiny_onnx, ds, 12, random.Random(4))
    model = names.registered_model_name(ds)
    k = Constraints(dataset=ds, min_top1=0.5)
    reg = Registry(settings=http_store, ttl_s=0, stale_s=0)
    got = logged.settle(client, model, k)
    assert got is not None and got.value is not None
    best = got.value[0]

    def index_answer() -> str | None:
        full = Registry(settings=http_store, ttl_s=3600)
        from registry.selection import select

        return select(full.candidates(ds), k)[0].candidate.version

    # the winner's card edited by hand: its LoggedModel (read first) says other figures
    mv = client.get_model_version(model, best.version)
    client.set_model_version_tag(model, best.version, names.TAG_CARD, _card_with(mv.tags, top1=0.51))
    assert logged.settle(client, model, k) is None and reg.index.best_in_store(model, k) is None  # the index decides
    assert index_answer() != best.version
    client.set_model_version_tag(model, best.version, names.TAG_CARD, mv.tags[names.TAG_CARD])
    assert logged.settle(client, model, k) is not None

    # a second version from the worst LoggedModel, carded as the best: never read there, caught by the link count
    exp = client.get_experiment_by_name(names.experiment_name(ds)).experiment_id
    worst = client.search_logged_models([exp], order_by=[{"field_name": "metrics.top1", "ascending": True}])[0]
    first = json.loads(worst.tags[logged.LINKS])[0]["version"]
    tags = dict(client.get_model_version(model, first).tags)
    tags[names.TAG_CARD] = _card_with(tags, top1=0.999, top1_ci_low=0.998)
    twin = client.create_model_version(model, f"models:/{worst.model_id}", run_id=worst.source_run_id, tags=tags,
                                       model_id=worst.model_id)  # fmt: skip
    assert logged.settle(client, model, k) is None and reg.index.best_in_store(model, k) is None  # the index decides
    assert index_answer() == str(twin.version)


def test_a_cold_get_best_over_http_answers_from_the_logged_models(
    http_store: Settings,  # noqa: F811
    tiny_onnx: Any,
) -> None:
    """Through ``get_best`` (artifacts checked), each version logged by ``log_evaluation`` itself."""
    ds = "logged-real"
    versions = {v: log_one(http_store, tiny_onnx, ds, v, top1=t, top1_ci_low=t - 0.01).version
                for v, t in (("a", 0.8), ("b", 0.95), ("c", 0.9))}  # fmt: skip
    reg = Registry(settings=http_store, ttl_s=3600)
    answer = reg.get_best(Constraints(dataset=ds, min_top1=0.5))
    assert answer.candidate.version == str(versions["b"])
    assert reg.index.store_queries == {"api": 1} and reg.index.loads == 0  # from the LoggedModels

    # a card written after registration (`cnnselect add-cards`: a figure corrected on the run, say): the registered
    # model is marked before the first card is written, and the LoggedModels no longer answer for it
    from registry.cards import add_cards

    client, model = MlflowClient(http_store.resolved_tracking_uri), names.registered_model_name(ds)
    client.delete_model_version_tag(model, str(versions["c"]), names.TAG_CARD)
    assert add_cards(http_store, ds) == 1
    assert names.TAG_CARDS_REWRITTEN in client.get_registered_model(model).tags
    assert logged.settle(client, model, Constraints(dataset=ds, min_top1=0.5)) is None
    again = Registry(settings=http_store, ttl_s=3600)
    assert again.get_best(Constraints(dataset=ds, min_top1=0.5)).candidate.version == str(versions["b"])
    assert again.index.loads == 1  # the index answered
