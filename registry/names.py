"""The one place that owns names: experiments, registered models, tags, run names, aliases."""

from __future__ import annotations

import re

from registry.errors import InvalidNameError

EVALUATOR_VERSION = "1"  # bump when a change to the evaluators makes old measurements incomparable

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
TAG_BATCH_SIZE = "cnnselect.batch_size"  # operating point of the measurement (from the runner's fingerprint)
TAG_THREADS = "cnnselect.threads"
TAG_RUN_ID = "cnnselect.run_id"
TAG_TEAM = "cnnselect.team"
TAG_PROMOTION_PREFIX = "cnnselect.promotion."  # on a version: cnnselect.promotion.<team>.<field>
PROMOTIONS_EXPERIMENT = "cnnselect/promotions"
METRIC_TAG_PREFIX = "cnnselect.metric."  # metrics copied onto model versions: one registry search answers get_best

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
