"""The one place that owns names: experiments, registered models, tags, run names, aliases."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from registry.errors import InvalidNameError

# bump when a change to the evaluators makes old measurements incomparable
# 2: timm eval transforms at each tag's own size, ImageNet heads kept, FP32 classifier in INT8, stable tie rule
EVALUATOR_VERSION = "2"

TAG_PREFIX = "cnnselect."
TAG_VARIANT = "cnnselect.variant"
TAG_FAMILY = "cnnselect.family"
TAG_RUNNER = "cnnselect.runner"
TAG_PRECISION = "cnnselect.precision"
TAG_DATASET = "cnnselect.dataset"
TAG_DATASET_DIGEST = "cnnselect.dataset_digest"
TAG_WEIGHTS_DIGEST = "cnnselect.weights_digest"
TAG_WEIGHTS_SOURCE = "cnnselect.weights_source"
TAG_FINGERPRINT = "cnnselect.fingerprint"
TAG_HOST = "cnnselect.host"  # hardware-only id of the measuring machine (evaluators.runners.host_id): one per machine
TAG_KEY = "cnnselect.key"  # idempotency key: what was measured, on what, how
TAG_WRITE = "cnnselect.write"  # on a run: one write call's id, the same across its retries (registry.writes)
TAG_SWEEP = "cnnselect.sweep"  # the sweep (Airflow run id or CLI invocation) that produced the run
TAG_STATUS = "cnnselect.status"  # running (being written, or left by a killed attempt) | ok | failed
TAG_STAGE = "cnnselect.stage"  # where a failed evaluation stopped
TAG_ERROR = "cnnselect.error"
TAG_EVALUATOR_VERSION = "cnnselect.evaluator_version"
TAG_PREPROCESS = "cnnselect.preprocess"  # JSON of timm's eval data config (evaluators.images.Preprocess)
TAG_BATCH_SIZE = "cnnselect.batch_size"  # operating point of the measurement (from the runner's fingerprint)
TAG_THREADS = "cnnselect.threads"
TAG_RUN_ID = "cnnselect.run_id"
TAG_TEAM = "cnnselect.team"
# on a registered model: its cards were written after registration (``cnnselect add-cards``), so a card need not be
# its version's LoggedModel's figures: registry.stores.logged does not answer for it
TAG_CARDS_REWRITTEN = "cnnselect.cards_rewritten"
TAG_PROMOTION_PREFIX = "cnnselect.promotion."  # on a version: cnnselect.promotion.<team>.<field>
PROMOTIONS_EXPERIMENT = "cnnselect/promotions"
# One tag per fully logged version holds every figure the read path judges (registry.stores), in
# one short value: the version's metrics live on its run and LoggedModel, where MLflow's UI shows and plots them. It
# is written in the one call that registers the version, never edited by cnnselect afterwards, and a version without
# a readable one is no candidate. The format is in the key: a new one gets a new key (v1 lacked top1_ci_high, and
# sat beside a cnnselect.metric.<m> tag per metric; v2 lacked the host id, which host targets select on).
TAG_CARD = "cnnselect.card.v3"
CARD_METRICS = (
    "top1", "latency_p95_ms", "latency_p95_ub_ms", "size_mb", "onnx_parity_ok", "top1_ci_low", "params_m", "gmacs",
    "memory_rss_mb", "top1_drop_vs_fp32", "latency_p50_ms", "latency_p50_ub_ms", "latency_p90_ms",
    "latency_p90_ub_ms", "latency_p99_ms", "latency_p99_ub_ms", "top1_ci_high",
)  # fmt: skip
CARD_FIELDS = ("point", "fingerprint", "family", *CARD_METRICS, "host")  # space-separated, in this order; "-" = none

# What a registered version carries, declared once: registry.writes registers exactly these. What a person filters
# versions by in MLflow's UI, and what the read path needs; True: the index reads it (registry.index).
VERSION_TAGS: dict[str, bool] = {
    TAG_VARIANT: True,
    TAG_FAMILY: False,  # on the card too, as are runner, precision, batch size, threads, fingerprint and host
    TAG_RUNNER: False,
    TAG_PRECISION: False,
    TAG_BATCH_SIZE: False,
    TAG_THREADS: False,
    TAG_FINGERPRINT: False,
    TAG_HOST: False,
    TAG_DATASET: False,
    TAG_WEIGHTS_SOURCE: False,
    TAG_SWEEP: False,
    TAG_EVALUATOR_VERSION: True,
    TAG_STATUS: True,
    TAG_KEY: False,  # registry.writes.settle_key finds what a killed attempt registered by it
    TAG_PREPROCESS: False,  # Answer.preprocess reads it from the chosen version
    TAG_RUN_ID: True,
    TAG_CARD: True,
}
INDEX_TAGS = tuple(key for key, read in VERSION_TAGS.items() if read)

STATUS_OK = "ok"
STATUS_FAILED = "failed"

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def validate_name(kind: str, name: str) -> str:
    """Names end up in paths and MLflow filter strings: letters, digits, ``_ . -`` only, no ``..``."""
    if not isinstance(name, str) or not _SAFE.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {kind} name {name!r}: use 1-100 letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return name


_ALIAS_SAFE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


def validate_team_name(name: str) -> str:
    """A team name is also part of an MLflow alias (letters, digits, _ and - only, not ``latest`` nor ``v<digits>``)."""
    validate_name("team", name)
    if not _ALIAS_SAFE.match(name):
        raise InvalidNameError(
            f"invalid team name {name!r}: use 1-63 lowercase letters, digits, '_' or '-' (it becomes an MLflow alias)"
        )
    return name


def team_alias(team: str) -> str:
    """The team's alias on the dataset's registered model; the ``team-`` prefix keeps clear of reserved aliases."""
    return f"team-{validate_team_name(team)}"


def promotion_tag(team: str, field: str) -> str:
    return f"{TAG_PROMOTION_PREFIX}{validate_team_name(team)}.{field}"


def experiment_name(dataset: str) -> str:
    return f"cnnselect/{validate_name('dataset', dataset)}"


def registered_model_name(dataset: str) -> str:
    return f"cnnselect-{validate_name('dataset', dataset)}"


def run_name(variant: str, runner: str, precision: str) -> str:
    return f"{variant}/{runner}/{precision}"


def card_point(runner: str, precision: str, batch_size: int, threads: str) -> str:
    """The operating point as the card's first field: ``runner/precision/batch/threads``."""
    return f"{runner}/{precision}/{batch_size}/{threads}"


def threads_setting(described: str | None) -> str:
    """The threads of an operating point, from what a runner's fingerprint says: its first word.

    A fingerprint may say more than the setting (``default (pool: 4)``, ``all (2)``); the card holds one word.
    """
    words = (described or "").split()
    return words[0] if words else "all"


def _count(text: str) -> bool:
    """A batch size as the card writes it: ASCII digits, no sign, no leading zero (``str(int(text)) == text``)."""
    return text.isascii() and text.isdigit() and str(int(text)) == text


def card(tags: Mapping[str, str], metrics: Mapping[str, float]) -> str | None:
    """The card of a version with these tags and metrics (see ``TAG_CARD``), or None when a value does not fit.

    The batch size defaults to 1 and the threads to "all"; a metric that is missing or not finite is "-"
    (unmeasured); every other one is ``repr(float)``, which Python and PostgreSQL read back as the same double
    (SQLite 3.40, about one in 10,000 of them, one ulp off).
    """
    batch = tags.get(TAG_BATCH_SIZE) or "1"
    if not batch.isascii() or not batch.isdigit():
        return None
    ident = [tags.get(TAG_RUNNER, ""), tags.get(TAG_PRECISION, ""), tags.get(TAG_THREADS) or "all"]
    if not all(ident) or any("/" in v for v in ident):
        return None
    fields = [card_point(ident[0], ident[1], int(batch), ident[2])]
    fields += [tags.get(TAG_FINGERPRINT) or "-", tags.get(TAG_FAMILY) or "-"]
    for metric in CARD_METRICS:
        value = float(metrics.get(metric, math.nan))
        fields.append(repr(value) if math.isfinite(value) else "-")
    fields.append(tags.get(TAG_HOST) or "-")
    if any(not f or f.split() != [f] for f in fields):  # empty, or a space inside: the positions would shift
        return None
    return " ".join(fields)


@dataclass(frozen=True)
class Card:
    """A card read back: the operating point, fingerprint, family and host ("" for none), and the measured metrics."""

    runner: str
    precision: str
    batch_size: int
    threads: str
    fingerprint: str
    family: str
    metrics: dict[str, float]
    host: str = ""


def read_card(value: str | None) -> Card | None:
    """The card's fields, or None when it is missing or is not exactly what :func:`card` writes.

    Strict, so that Python and the store (registry.stores.pushdown cuts the same fields in SQL) read the same figures:
    every metric is "-" or a finite ``repr(float)``, the batch size plain digits.
    """
    fields = (value or "").split(" ")
    if len(fields) != len(CARD_FIELDS):
        return None
    point = fields[0].split("/")
    if len(point) != 4 or not all(point) or not _count(point[2]):
        return None
    metrics: dict[str, float] = {}
    for metric, text in zip(CARD_METRICS, fields[3:-1], strict=True):
        if text == "-":
            continue
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isfinite(number) or repr(number) != text:
            return None
        metrics[metric] = number
    fingerprint, family, host = ("" if f == "-" else f for f in (*fields[1:3], fields[-1]))
    return Card(point[0], point[1], int(point[2]), point[3], fingerprint, family, metrics, host)


def version_tags(tags: Mapping[str, str], metrics: Mapping[str, float]) -> dict[str, str]:
    """What a version is registered with: those of ``tags`` that ``VERSION_TAGS`` declares, and the card.

    Only a fully logged version (its run id among ``tags``) gets a card, built from ``tags`` and ``metrics``; a card
    among ``tags`` is never copied. A value that does not fit the card (see :func:`card`) leaves the version without
    one: no candidate.
    """
    out = {key: tags[key] for key in VERSION_TAGS if key in tags and key != TAG_CARD}
    value = card(out, metrics) if out.get(TAG_RUN_ID) else None
    if value is not None:
        out[TAG_CARD] = value
    return out
