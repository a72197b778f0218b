"""The one place that owns names: experiments, registered models, tags, run names, aliases."""

from __future__ import annotations

import math
import re

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
TAG_KEY = "cnnselect.key"  # idempotency key: what was measured, on what, how
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
TAG_PROMOTION_PREFIX = "cnnselect.promotion."  # on a version: cnnselect.promotion.<team>.<field>
PROMOTIONS_EXPERIMENT = "cnnselect/promotions"
METRIC_TAG_PREFIX = "cnnselect.metric."  # metrics copied onto model versions: one registry search answers get_best
# One tag per fully logged version: the figures a cold get_best reads in the store (registry.pushdown), in one
# short value instead of about 15 key-value rows. It mirrors the version's own tags at registration (cnnselect never
# edits them afterwards); the exact verdict is always taken from those tags. The format is in the key: a new one
# gets a new key.
TAG_CARD = "cnnselect.card.v1"
CARD_METRICS = (
    "top1", "latency_p95_ms", "latency_p95_ub_ms", "size_mb", "onnx_parity_ok", "top1_ci_low", "params_m", "gmacs",
    "memory_rss_mb", "top1_drop_vs_fp32", "latency_p50_ms", "latency_p50_ub_ms", "latency_p90_ms",
    "latency_p90_ub_ms", "latency_p99_ms", "latency_p99_ub_ms",
)  # fmt: skip
CARD_FIELDS = ("point", "fingerprint", "family", *CARD_METRICS)  # space-separated, in this order; "-" = none

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


def metric_tag(metric: str) -> str:
    return METRIC_TAG_PREFIX + metric


def card_point(runner: str, precision: str, batch_size: int, threads: str) -> str:
    """The operating point as the card's first field: ``runner/precision/batch/threads``."""
    return f"{runner}/{precision}/{batch_size}/{threads}"


def card(tags: dict[str, str]) -> str | None:
    """The card of a version with these tags (see ``TAG_CARD``), or None when a value does not fit its format.

    It holds what the index would build from the same tags: the batch size defaults to 1 and the threads to "all";
    a metric that is missing, unreadable or not finite is "-" (the index leaves it unmeasured).
    """
    batch = tags.get(TAG_BATCH_SIZE) or "1"
    if not batch.isdigit():
        return None
    ident = [tags.get(TAG_RUNNER, ""), tags.get(TAG_PRECISION, ""), tags.get(TAG_THREADS) or "all"]
    if not all(ident) or any("/" in v for v in ident):
        return None
    fields = [card_point(ident[0], ident[1], int(batch), ident[2])]
    fields += [tags.get(TAG_FINGERPRINT) or "-", tags.get(TAG_FAMILY) or "-"]
    for metric in CARD_METRICS:
        try:
            value = float(tags.get(metric_tag(metric), "nan"))
        except ValueError:
            value = math.nan
        fields.append(repr(value) if math.isfinite(value) else "-")
    if any(not f or f.split() != [f] for f in fields):  # empty, or a space inside: the positions would shift
        return None
    return " ".join(fields)


def with_card(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` with their card (an old one dropped): what a version is registered with.

    Only a fully logged version gets one (its run id in the same tags, the index's "done"), so counting cards and
    run ids compares the two sets.
    """
    out = {k: v for k, v in tags.items() if k != TAG_CARD}
    value = card(out) if out.get(TAG_RUN_ID) else None
    if value is not None:
        out[TAG_CARD] = value
    return out
