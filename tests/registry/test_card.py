"""The version card (``names.card``, ``names.read_card``) and the tags a version carries (``names.version_tags``)."""

from __future__ import annotations

import itertools
import math
import random
import struct
from typing import Any, get_args

import pytest

from registry import names
from registry.constraints import Constraints, Metric, Objective, Percentile
from registry.promotion import _objective, beats
from registry.selection import Candidate, judge, rank_key
from registry.teams import Team


def tags(**more: str) -> dict[str, str]:
    out = {
        names.TAG_RUNNER: "edge",
        names.TAG_PRECISION: "int8",
        names.TAG_FINGERPRINT: "fp-1",
        names.TAG_FAMILY: "resnet",
        names.TAG_RUN_ID: "r1",
    }
    return {**out, **more}


METRICS = {"top1": 0.75, "latency_p95_ms": 3.5}


def fields(card: str | None) -> dict[str, str]:
    assert card is not None
    return dict(zip(names.CARD_FIELDS, card.split(" "), strict=True))


def test_a_card_holds_every_field_in_order_with_the_index_defaults() -> None:
    f = fields(names.card(tags(), METRICS))
    assert f["point"] == "edge/int8/1/all"  # no batch or threads tag: batch 1, all threads, as the index reads it
    assert (f["fingerprint"], f["family"], f["top1"], f["latency_p95_ms"]) == ("fp-1", "resnet", "0.75", "3.5")
    assert f["size_mb"] == "-"  # unmeasured


def test_non_finite_metrics_are_unmeasured() -> None:
    odd = {"top1": math.nan, "gmacs": math.inf, "params_m": 1000}
    f = fields(names.card(tags(), odd))
    assert (f["top1"], f["gmacs"], f["params_m"]) == ("-", "-", "1000.0")


def test_values_that_would_shift_the_positions_give_no_card() -> None:
    assert names.card(tags(**{names.TAG_FAMILY: "res net"}), METRICS) is None
    assert names.card(tags(**{names.TAG_BATCH_SIZE: "eight"}), METRICS) is None
    assert names.card(tags(**{names.TAG_BATCH_SIZE: "٣"}), METRICS) is None  # a digit, not an ASCII one
    assert names.card(tags(**{names.TAG_RUNNER: ""}), METRICS) is None
    assert names.card(tags(**{names.TAG_THREADS: "2/4"}), METRICS) is None
    point = fields(names.card(tags(**{names.TAG_BATCH_SIZE: "8", names.TAG_THREADS: "1"}), METRICS))["point"]
    assert point == "edge/int8/8/1"


def _any_float(rng: random.Random) -> float:
    """Any finite double, sign and exponent included (most draws far from the figures a model has)."""
    while True:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            return float(value)


def test_a_card_reads_back_exactly_what_was_written() -> None:
    rng = random.Random(0)
    for _ in range(300):
        metrics = {m: _any_float(rng) if rng.random() < 0.5 else rng.uniform(0, 100) for m in names.CARD_METRICS}
        for gone in rng.sample(names.CARD_METRICS, rng.randint(0, 5)):
            del metrics[gone]
        card = names.read_card(names.card(tags(**{names.TAG_BATCH_SIZE: "16", names.TAG_THREADS: "4"}), metrics))
        assert card == names.Card("edge", "int8", 16, "4", "fp-1", "resnet", metrics)
    bare = names.read_card(names.card(tags(**{names.TAG_FINGERPRINT: "", names.TAG_FAMILY: ""}), {}))
    assert bare is not None and (bare.fingerprint, bare.family, bare.metrics) == ("", "", {})


def _with(field: str, text: str) -> str:
    card = names.card(tags(), METRICS)
    assert card is not None
    parts = card.split(" ")
    parts[names.CARD_FIELDS.index(field)] = text
    return " ".join(parts)


@pytest.mark.parametrize(
    "card",
    [
        None,
        "",
        _with("top1", "1_000"),  # Python's float() reads it, PostgreSQL does not: neither reads the card
        _with("top1", "1e3"),  # not repr(float): SQL and Python must read the same text
        _with("top1", "0.750"),
        _with("top1", "nan"),
        _with("top1", "inf"),
        _with("top1", "0.75 "),  # one field too many
        _with("point", "edge/int8/01/all"),  # the store's prefix test would not match it
        _with("point", "edge/int8/1"),
        _with("point", "edge//1/all"),
        " ".join(names.card(tags(), METRICS).split(" ")[:-1]),  # type: ignore[union-attr]  # one field short
        names.card(tags(), METRICS).replace(" ", "  ", 1),  # type: ignore[union-attr]
    ],
)
def test_a_card_that_is_not_exactly_what_card_writes_is_unreadable(card: str | None) -> None:
    assert names.read_card(card) is None


def test_a_version_carries_its_declared_tags_and_card_only() -> None:
    provenance = {names.TAG_DATASET_DIGEST: "d" * 64, names.TAG_WEIGHTS_DIGEST: "w" * 64, "mlflow.user": "x"}
    copied = {names.TAG_CARD: "cpu/fp32/1/all x y", "cnnselect.card.v1": "old", "cnnselect.metric.top1": "0.9"}
    metrics = {m: 0.5 for m in (*names.CARD_METRICS, "top5", "latency_mean_ms", "throughput_ips")}
    out = names.version_tags({**tags(), **provenance, **copied}, metrics)
    assert set(out) == {*tags(), names.TAG_CARD}  # only what VERSION_TAGS declares, and the card
    assert out[names.TAG_CARD] == names.card(tags(), metrics)  # the copied card is never kept
    assert names.TAG_CARD not in names.version_tags(tags(**{names.TAG_FAMILY: "a b"}), metrics)
    assert names.TAG_CARD not in names.version_tags(tags(**{names.TAG_RUN_ID: ""}), metrics)  # not fully logged
    assert len(names.VERSION_TAGS) <= 20 and not any(k.startswith("cnnselect.metric.") for k in names.VERSION_TAGS)
    assert set(names.INDEX_TAGS) <= set(names.VERSION_TAGS) and names.TAG_CARD in names.INDEX_TAGS


class Reads(dict[str, float]):
    """A candidate's metrics that note every name read."""

    seen: set[str]

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> float:
        self.seen.add(key)
        return super().__getitem__(key)


def test_every_metric_selection_and_promotion_can_read_is_on_the_card() -> None:
    """What the read path judges comes from the card alone: a metric off it would read as never measured."""
    metrics = Reads({m: 1.0 for m in names.CARD_METRICS})
    metrics.seen = set()
    c = Candidate("m", "1", "r", "v", "resnet", "cpu", "fp32", "fp", metrics)
    budgets = {"max_latency_ms": 1, "max_params_m": 1, "max_size_mb": 1, "max_gmacs": 1, "max_peak_memory_mb": 1}
    budgets |= {"min_top1": 0.5, "max_top1_drop": 0.1}
    every: tuple[str, ...] = get_args(Metric)
    for objective, p in itertools.product(get_args(Objective), get_args(Percentile)):
        k = Constraints(
            latency_percentile=p,
            objective=objective,
            weights=dict.fromkeys(every, 1.0) if objective == "weighted" else None,
            tie_breakers=tuple(m for m in every if m != objective),
            **budgets,
        )
        judge(c, k)
        rank_key(k)(c)
        team = Team(name="t", constraints=k)
        beats(c, c, team)
        _objective(c, k)
    assert metrics.seen and metrics.seen <= set(names.CARD_METRICS), metrics.seen - set(names.CARD_METRICS)
    percentiles = {f"latency_p{p}_{s}" for p in get_args(Percentile) for s in ("ms", "ub_ms")}
    assert percentiles <= metrics.seen  # each percentile, its point and bound, was exercised


def test_what_the_leaderboard_and_report_show_is_on_the_card() -> None:
    from cnnselect import plots, views

    shown = {metric for metric, _ in plots.AXES} | {key for _, key, _ in views.LEADERBOARD_COLUMNS}
    assert shown <= set(names.CARD_METRICS)
