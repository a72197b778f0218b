"""Bounded retries around tracking-store calls, with typed errors that say what to do; and what makes them safe.

A server that is down (connection refused, 5xx) or a SQLite store locked by other writers is retried with
exponential backoff and jitter for at most ``CNNSELECT_TRACKING_RETRY_SECONDS`` (``Settings.tracking_retry_seconds``,
120 by default); anything else is raised at once. When the budget is spent: :class:`TrackingUnavailableError` or
:class:`TrackingStoreBusyError` (which points to PostgreSQL). URIs in messages and logs are redacted.

A retried write must not leave the first attempt's half behind, in this process (:class:`Attempts`) or after the
process was killed (:func:`settle_key`): half-written runs are deleted with their versions and logged models, never
just marked. ``client`` below is an ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from registry import names
from registry.errors import RegistryError
from registry.settings import Settings

log = logging.getLogger(__name__)


class TrackingUnavailableError(RegistryError):
    """The tracking server did not answer within the retry budget; nothing was half-logged (partial runs aborted)."""


class TrackingStoreBusyError(RegistryError):
    """The SQLite store stayed locked by other writers past the retry budget; the message says to use PostgreSQL."""


def scrub(text: str, uri: str) -> str:
    """``text`` with the URI's password (and the URI itself) redacted: MLflow's messages quote the full URL."""
    from urllib.parse import urlsplit

    password = urlsplit(uri).password
    text = text.replace(uri, redact(uri))
    return text.replace(password, "***") if password else text


def redact(uri: str) -> str:
    """A URI fit for logs: the password (if any) replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_BUSY = ("database is locked", "database table is locked", "sqlite_busy")
_DOWN = (
    "connection refused",
    "max retries exceeded",
    "failed to establish a new connection",
    "connection aborted",
    "remotedisconnected",
    "read timed out",
    "temporarily_unavailable",
    "503",
    "502",
    "504",
)


def _transient(exc: BaseException) -> str | None:
    """``busy`` (SQLite locked), ``down`` (server unreachable) or None (a real error: never retried)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if any(t in text for t in _BUSY):
        return "busy"
    if isinstance(exc, ConnectionError | TimeoutError) or any(t in text for t in _DOWN):
        return "down"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: exponential backoff with jitter, at most ``budget_s`` seconds in all."""

    budget_s: float  # Settings.tracking_retry_seconds unless a caller says otherwise
    first_s: float = 0.5
    max_s: float = 8.0


def with_retries(
    fn: Callable[[], Any],
    what: str,
    settings: Settings,
    policy: RetryPolicy | None = None,
) -> Any:
    """Call ``fn`` until it succeeds, a non-transient error occurs, or the budget is spent (then a typed error)."""
    policy = policy or RetryPolicy(settings.tracking_retry_seconds)
    deadline = time.monotonic() + policy.budget_s
    delay, attempt = policy.first_s, 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            kind = _transient(exc)
            if kind is None:
                raise
            left = deadline - time.monotonic()
            uri = redact(settings.resolved_tracking_uri)
            if left <= 0:
                if kind == "busy":
                    raise TrackingStoreBusyError(
                        f"{what}: the SQLite store {uri} stayed locked by other writers for {policy.budget_s:.0f} s "
                        f"({attempt} attempts). SQLite serializes writers; for parallel workers use PostgreSQL "
                        "(CNNSELECT_TRACKING_URI=postgresql://...) or an MLflow server in front of it."
                    ) from exc
                raise TrackingUnavailableError(
                    f"{what}: tracking store {uri} unreachable for {policy.budget_s:.0f} s ({attempt} attempts): "
                    f"{type(exc).__name__}: {scrub(str(exc), settings.resolved_tracking_uri)[:300]}"
                ) from exc
            log.warning("%s: tracking store %s (%s), attempt %d; retrying in %.1f s", what, kind, uri, attempt, delay)
            time.sleep(min(delay, max(left, 0.0)) * (0.5 + random.random() / 2))
            delay = min(delay * 2, policy.max_s)


# -- what an interrupted attempt leaves behind ------------------------------------------------------------------

STATUS_RUNNING = "running"  # a run's status while its attempt writes; the attempt's last write makes it ``ok``
_HISTORY = (names.STATUS_OK, names.STATUS_FAILED)  # complete runs: a result, or a failure record


def search_runs(client: Any, exp_id: str, filter_string: str) -> list[Any]:
    """Every active run of the experiment matching the filter, newest first (one search, read page by page)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp_id], filter_string, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs += page
        token = page.token
        if not token:
            return runs


def delete_all(client: Any, runs: list[str], versions: list[Any], models: list[str]) -> None:
    """Delete runs (ended FAILED first), model versions and logged models; what is gone already is skipped.

    Runs go first: every later write of an attempt still alive then fails (``create_model_version`` aside).
    """
    for fn, args in [
        *((client.set_terminated, (r, "FAILED")) for r in runs),
        *((client.delete_run, (r,)) for r in runs),
        *((client.delete_model_version, (mv.name, str(mv.version))) for mv in versions),
        *((client.delete_logged_model, (m,)) for m in models),
    ]:
        try:
            fn(*args)
        except Exception as exc:
            if _transient(exc):
                raise
            log.debug("cleanup: %s%s skipped: %s", fn.__name__, args, exc)  # deleted already, or by another cleaner


@dataclass
class Attempts:
    """What one call wrote across its attempts: the runs not complete yet, and the runs its cleanups deleted."""

    exp_id: str = ""
    started: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def discard(self, client: Any) -> None:
        """Delete the started runs (an attempt of this call died in them), with their versions and logged models."""
        for run_id in list(self.started):
            versions = list(client.search_model_versions(f"run_id = '{run_id}'"))
            found = client.search_logged_models([self.exp_id], filter_string=f"source_run_id = '{run_id}'")
            delete_all(client, [run_id], versions, [m.model_id for m in found])
            self.started.remove(run_id)
            self.replaced.append(run_id)
            log.warning("deleted half-written run %s (versions %s)", run_id, [mv.version for mv in versions] or "none")

    def discard_after(self, client: Callable[[], Any], exc: BaseException) -> None:
        """After an attempt raised: delete what it wrote, unless the store is unreachable (the next attempt will)."""
        if not self.started or (isinstance(exc, Exception) and _transient(exc)):
            return
        try:
            self.discard(client())
        except Exception as cleanup_exc:
            log.warning("could not delete half-written runs %s: %s", self.started, cleanup_exc)


def settle_key(
    client: Any, exp_id: str, model_name: str, key: str, replaced: list[str]
) -> tuple[str | None, str | None]:
    """Before an attempt: the key's newest ``ok`` run and its version, if any; and what killed attempts left, deleted.

    Left behind: the key's runs whose status is neither ``ok`` nor ``failed`` (``running``; ``aborted`` or none from
    earlier versions), and its model versions and logged models that are not its ``ok`` run's. Failed runs
    (``log_failure``) and gate runs are history and stay. Deleted runs join ``replaced``.
    """
    by_key = f"tags.`{names.TAG_KEY}` = '{key}'"
    runs = search_runs(client, exp_id, by_key)
    ok = next((r.info.run_id for r in runs if r.data.tags.get(names.TAG_STATUS) == names.STATUS_OK), None)
    stale = [  # evaluation runs carry the variant; gate runs (a key, no status) do not
        r.info.run_id
        for r in runs
        if r.data.tags.get(names.TAG_STATUS) not in _HISTORY and names.TAG_VARIANT in r.data.tags
    ]
    versions = client.search_model_versions(f"name = '{model_name}' and {by_key}")
    kept = [mv for mv in versions if ok is not None and mv.run_id == ok]
    stray = [mv for mv in versions if ok is None or mv.run_id != ok]
    models = [m.model_id for m in client.search_logged_models([exp_id], filter_string=by_key) if m.source_run_id != ok]
    if stale or stray or models:
        log.warning(
            "key %s: deleting what a killed attempt left: runs %s, %s versions %s, logged models %s",
            key, stale, model_name, [mv.version for mv in stray], models,
        )  # fmt: skip
        delete_all(client, stale, stray, models)
        replaced += stale
    version = str(kept[0].version) if kept else None
    if ok is not None:
        log.info("key %s: logged before as run %s (version %s); nothing to write", key, ok, version)
    return ok, version
