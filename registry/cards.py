"""Cards written after registration (``cnnselect add-cards``): each version's card from its run, old tags pruned.

A version is registered with its card (``names.TAG_CARD``) in the same call, so a store written by this cnnselect
needs neither. They serve a store written before: versions whose figures sit in one ``cnnselect.metric.<m>`` tag
each, or in an older card, are no candidates until they carry this one; and a card edited by hand, which the index
does not see until its next full reload, is put back to what the run measured. A run logged before
host ids (``names.TAG_HOST``) gets its host from its own ``fingerprint.json``, as the pipeline computes it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from registry import names, writes
from registry.retry import search_runs
from registry.settings import Settings

log = logging.getLogger(__name__)


def _client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    uri = settings.resolved_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(client: Any, model: str) -> list[Any]:
    """Every version of the registered model, read page by page."""
    out, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{model}'", max_results=1000, page_token=token)
        out += page
        token = page.token
        if not token:
            return out


def add_cards(settings: Settings, dataset: str) -> int:
    """Write each fully logged version's card from its run where it lacks it or it disagrees; returns how many.

    The run's metrics are the record: to correct a figure, log it on the run, then run this. Running it twice writes
    nothing the second time.
    """
    model = names.registered_model_name(dataset)  # validates the name first: it goes into the filter string
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    versions = [mv for mv in _versions(client, model) if (mv.tags or {}).get(names.TAG_RUN_ID)]
    runs: dict[str, Any] = {}
    exp = client.get_experiment_by_name(names.experiment_name(dataset))
    if exp is not None and versions:
        runs = {r.info.run_id: r for r in search_runs(client, exp.experiment_id, "")}
    written = 0
    for mv in versions:
        tags = dict(mv.tags)
        run = runs.get(tags[names.TAG_RUN_ID])
        if run is None:  # in another experiment, or deleted: asked for by id
            try:
                run = client.get_run(tags[names.TAG_RUN_ID])
            except MlflowException as exc:
                log.warning("%s v%s: no card written, its run is not readable (%s)", model, mv.version, exc)
                continue
        measured = {**run.data.tags, **tags}
        if not measured.get(names.TAG_HOST):
            measured[names.TAG_HOST] = _host_of(client, run.info.run_id, measured.get(names.TAG_RUNNER, ""))
        value = names.version_tags(measured, run.data.metrics).get(names.TAG_CARD)
        if value is not None and tags.get(names.TAG_CARD) != value:
            if not written:  # before the first card: a card written here need not be its LoggedModel's figures
                writes.set_model_tag(settings, client, model, names.TAG_CARDS_REWRITTEN, str(int(time.time() * 1000)))
            writes.set_version_tags(settings, client, model, mv.version, {names.TAG_CARD: value})
            written += 1
    return written


def _host_of(client: Any, run_id: str, runner: str) -> str:
    """The host id of a run logged before host ids: from its ``fingerprint.json``; "" when it cannot be told."""
    import json
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from evaluators.runners import RUNNER_HOST, runner_host_id

    if runner not in RUNNER_HOST:
        return ""
    try:
        fp = json.loads(Path(client.download_artifacts(run_id, "fingerprint.json")).read_text())
    except (MlflowException, OSError, ValueError) as exc:
        log.warning("run %s: no fingerprint.json to tell its host from (%s); its card has no host", run_id, exc)
        return ""
    return runner_host_id(runner, {str(k): str(v) for k, v in fp.items()}) if isinstance(fp, dict) else ""


def prune_tags(settings: Settings, dataset: str) -> int:
    """Delete the cnnselect tags a version no longer carries (metric tags, older cards, digests); returns how many.

    What ``names.VERSION_TAGS`` declares and the promotion tags stay, and so does every tag not named ``cnnselect.*``.
    A version without a readable card keeps every tag: run :func:`add_cards` first.
    """
    model = names.registered_model_name(dataset)
    client = _client(settings)
    deleted = 0
    for mv in _versions(client, model):
        tags = mv.tags or {}
        if names.read_card(tags.get(names.TAG_CARD)) is None:
            continue
        for key in tags:
            ours = key.startswith(names.TAG_PREFIX) and not key.startswith(names.TAG_PROMOTION_PREFIX)
            if ours and key not in names.VERSION_TAGS:
                writes.delete_version_tag(settings, client, model, mv.version, key)
                deleted += 1
    return deleted
