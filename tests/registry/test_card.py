"""The version card (``names.card``): what the index would build from the same tags, or None when it cannot fit."""

from __future__ import annotations

from registry import names


def tags(**more: str) -> dict[str, str]:
    out = {
        names.TAG_RUNNER: "edge",
        names.TAG_PRECISION: "int8",
        names.TAG_FINGERPRINT: "fp-1",
        names.TAG_FAMILY: "resnet",
        names.TAG_RUN_ID: "r1",
        names.metric_tag("top1"): "0.75",
        names.metric_tag("latency_p95_ms"): "3.5",
    }
    return {**out, **more}


def fields(card: str | None) -> dict[str, str]:
    assert card is not None
    return dict(zip(names.CARD_FIELDS, card.split(" "), strict=True))


def test_a_card_holds_every_field_in_order_with_the_index_defaults() -> None:
    f = fields(names.card(tags()))
    assert f["point"] == "edge/int8/1/all"  # no batch or threads tag: batch 1, all threads, as the index reads it
    assert (f["fingerprint"], f["family"], f["top1"], f["latency_p95_ms"]) == ("fp-1", "resnet", "0.75", "3.5")
    assert f["size_mb"] == "-"  # unmeasured


def test_non_finite_and_unreadable_metrics_are_unmeasured_as_the_index_reads_them() -> None:
    odd = {"top1": "nan", "size_mb": "big", "gmacs": "inf", "params_m": "1_000"}
    f = fields(names.card(tags(**{names.metric_tag(m): v for m, v in odd.items()})))
    assert (f["top1"], f["size_mb"], f["gmacs"], f["params_m"]) == ("-", "-", "-", "1000.0")


def test_values_that_would_shift_the_positions_give_no_card() -> None:
    assert names.card(tags(**{names.TAG_FAMILY: "res net"})) is None
    assert names.card(tags(**{names.TAG_BATCH_SIZE: "eight"})) is None
    assert names.card(tags(**{names.TAG_RUNNER: ""})) is None
    assert names.card(tags(**{names.TAG_THREADS: "2/4"})) is None
    assert fields(names.card(tags(**{names.TAG_BATCH_SIZE: "8", names.TAG_THREADS: "1"})))["point"] == "edge/int8/8/1"


def test_with_card_replaces_a_copied_card() -> None:
    stale = {**tags(), names.TAG_CARD: "cpu/fp32/1/all x y"}
    assert names.with_card(stale)[names.TAG_CARD] == names.card(tags())
    assert names.TAG_CARD not in names.with_card(tags(**{names.TAG_FAMILY: "a b"}))
    assert names.TAG_CARD not in names.with_card(tags(**{names.TAG_RUN_ID: ""}))  # not fully logged: no card
