"""Bounded retries around tracking-store calls, with typed errors that say what to do; and what makes them safe.

A server that is down (connection refused, 5xx) or a SQLite store locked by other writers is retried with
exponential backoff and jitter for at most ``CNNSELECT_TRACKING_RETRY_SECONDS`` (``Settings.tracking_retry_seconds``,
120 by default); anything else is raised at once. When the budget is spent: :class:`TrackingUnavailableError` or
:class:`TrackingStoreBusyError` (which points to PostgreSQL). URIs in messages and logs are redacted.

What makes a retried write safe (a half-written attempt deleted, a run found by its key before it is created) is
:mod:`registry.writes`, the one module that writes. ``client`` below is an ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def transient(exc: BaseException) -> str | None:
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
            kind = transient(exc)
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


# -- reads shared by the write and the read side ------------------------------------------------------------------


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
