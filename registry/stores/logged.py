"""A cold ``get_best`` over a tracking server from MLflow's LoggedModels: filtered and ordered by the server.

:func:`registry.stores.api.every_version` reads every version (about 0.5 ms a version on the server: seconds at
10,000 versions). ``log_evaluation`` logs each evaluation as one LoggedModel carrying the run's tags and the
metrics (linked to both), then registers one version from it, whose card (``names.TAG_CARD``) it writes from the same
tags and metrics. MLflow 3's ``search_logged_models`` filters LoggedModels by tags and metrics and orders them by a
metric on the server, over any store, HTTP included (here: the runner's, by the objective's metric); each names its
registered versions in its ``mlflow.modelVersions`` tag. So the best LoggedModels come first, a page at a time; their
versions are read and judged exactly from their cards with the index's own ``judge`` and ``rank_key``, and the
reading stops once no unread LoggedModel can rank first (``pushdown``'s stopping rule).

What the answer's exactness relies on (the index's answer, given the store as ``log_evaluation`` writes it):

- **one LoggedModel per version, its card written from that LoggedModel's tags and metrics.** Checked for every
  version read: its source is its LoggedModel (``models:/<model_id>``), its card's operating point, fingerprint,
  family, host and every card metric equal the LoggedModel's (one value per metric), else None; every version a
  LoggedModel read links is read. Checked for every LoggedModel of the experiment in one request: none links three
  versions or more (``SHARED``: a version registered again from it, as the HTTP oracle test's clones are), else None.
  Not checkable without reading every version, and so assumed: no version at the point was registered from outside
  the dataset's experiment, from a LoggedModel deleted since, or without its ``mlflow.modelVersions`` link
  (``mlflow.register_model`` and the tracking server write it; ``MlflowClient.create_model_version`` on a database
  URI does not), no second version was registered from a LoggedModel outside a tracking server (two links, which one
  version over HTTP also has), and no card was edited by hand to differ from its LoggedModel (``cnnselect
  add-cards`` writes cards from the run's metrics, which are the LoggedModel's);
- **every filter is implied by feasibility on the card** (a superset). On the server, the runner only (each filter
  there is one more join with MLflow's ordering window: :func:`point_filter`); on each LoggedModel as it comes, the
  rest of the operating point's tags (precision, batch size, the threads and host where pinned; the card's are those
  tags), the target fingerprint, the family where constrained, and the budgets judged on a figure without a bound:
  ``params_m``, ``size_mb``, ``gmacs``, ``memory_rss_mb`` and ``top1_drop_vs_fp32``. Not ``top1`` nor latency:
  ``judge`` checks their bound where it is finite, else the point, and a bound below its point is possible in the
  data, so neither metric alone is implied;
- **the server orders by the objective's metric exactly as ``rank_key`` costs it**: the value is the card's (checked
  as above, a double both ways), a missing one last (MLflow sorts NULLs last: Python's +inf); the latest value per
  metric, which is the only one (checked). Once the next LoggedModel's value is beyond the best feasible one's, no
  unread version can rank first: ties are read to the end and broken by ``rank_key``;
- **the target fingerprint is the index's**: ``k.fingerprint``, else that of the newest usable candidate at the point
  (``selection.target_fingerprint``: the highest (creation time, version) among READY, ``ok`` versions with a readable
  card at the point), found among the newest versions whose card starts with the point, newest first.

Single-metric objectives only, runner targets only: a weighted objective (no single metric to order by) or a host
target returns None, as does anything unusual (a server error, too many pages, no fingerprint, cards written after
registration: ``names.TAG_CARDS_REWRITTEN``): the caller loads the index instead, which is always right. No artifact
check here: the caller checks the winner's.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, at_point, cost_term, judge, rank_key
from registry.stores.pushdown import Settled, _beyond, point_prefix
from registry.stores.versions import rows_of

log = logging.getLogger(__name__)
PAGE = 32
FIRST_PAGE = 16  # the best few nearly always settle it; a second page costs a round trip more than a longer first
MAX_PAGES = 4
NEWEST_PAGE = 16  # the newest versions at the point read for the target fingerprint
NEWEST_PAGES = 2
VERSIONS_PER_PAGE = 200  # the versions of a page's runs asked for at once (one each, as log_evaluation registers)
LINKS = "mlflow.modelVersions"  # mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS: the versions registered from a model
# three links or more: registered twice at least. One version is linked once or twice (over HTTP the server links it,
# then the client's ``register_model`` appends it again); two versions linked once each (a store written directly,
# not through a server) go unseen here
SHARED = f"tags.`{LINKS}` LIKE '%}},%}},%'"
_UNBOUNDED = (  # budgets judged on the figure itself (no confidence bound): each one's filter is implied
    ("max_params_m", "params_m"),
    ("max_size_mb", "size_mb"),
    ("max_gmacs", "gmacs"),
    ("max_peak_memory_mb", "memory_rss_mb"),
    ("max_top1_drop", "top1_drop_vs_fp32"),
)


def settle(client: Any, model_name: str, k: Constraints) -> Settled[tuple[Candidate, Verdict]] | None:
    """The best feasible candidate for ``k`` (``Settled(None)``: none), from LoggedModels; None when not sure.

    ``client`` is an ``MlflowClient``; ``model_name`` the dataset's registered model. Any error is "not sure".
    """
    if k.on_host or k.objective == "weighted":
        return None
    try:
        return _settle(client, model_name, k)
    except Exception as exc:  # a server error, a filter it refuses: the caller loads the index
        log.warning("get_best from the LoggedModels of %s failed (%s); loading the index", model_name, exc)
        return None


def _settle(client: Any, model_name: str, k: Constraints) -> Settled[tuple[Candidate, Verdict]] | None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:  # the newest version meanwhile: two round trips saved
        newest = pool.submit(newest_fingerprint, client, model_name, k) if k.fingerprint is None else None
        experiment = client.get_experiment_by_name(names.experiment_name(k.dataset))
        ids = [str(experiment.experiment_id)] if experiment is not None else []
        shared = not ids or len(client.search_logged_models(ids, filter_string=SHARED, max_results=1)) > 0
        shared = shared or rewritten(client, model_name)
        fp = k.fingerprint if newest is None else newest.result()
    if shared:
        return None  # no experiment, a LoggedModel with several versions or cards written later: not its figures
    if not fp or not _plain(fp):
        return None  # none there, or none on the newest card: no tag to filter on
    metric, sign = cost_term(k.objective, k)
    point = point_filter(k, fp)
    if point is None:
        return None
    where, tags = point
    order = [{"field_name": f"metrics.{metric}", "ascending": sign > 0}]
    key = rank_key(k)
    winner: tuple[Any, Verdict] | None = None
    token = None
    for page in range(MAX_PAGES):
        size = FIRST_PAGE if page == 0 else PAGE  # a token is an offset: the next page starts past this one
        found = client.search_logged_models(
            ids, filter_string=where, order_by=order, max_results=size, page_token=token
        )
        figured = [(lm, _figures(lm)) for lm in found]
        judged = [(lm, f, f is not None and _wanted(lm, tags, f, k)) for lm, f in figured]
        batch = _by_source(client, model_name, [lm for lm, _, wanted in judged if wanted])  # those that can be feasible
        for lm, figures, wanted in judged:
            if figures is None:
                return None
            value = figures.get(metric)
            floor = math.inf if value is None or not math.isfinite(value) else sign * value
            if winner is not None and _beyond(floor, winner[0][0][0]):
                return Settled((winner[1].candidate, winner[1]))
            if not wanted:
                continue  # another point, family or over a budget: its versions could not be feasible here
            versions = _versions(client, model_name, lm, figures, batch)
            if versions is None:
                return None
            for c in versions:
                if c.fingerprint != fp or not at_point(c, k):
                    continue  # a superset's (a store comparing tags without case): not at the point
                v = judge(c, k)
                if v.label == "feasible" and (winner is None or key(c) < winner[0]):
                    winner = (key(c), v)
        token = found.token
        if not token:  # every LoggedModel there read
            return Settled((winner[1].candidate, winner[1])) if winner is not None else Settled(None)
    return None  # not settled within the pages read


def rewritten(client: Any, model_name: str) -> bool:
    """Cards were written after registration (``cnnselect add-cards``: ``names.TAG_CARDS_REWRITTEN``), or no such model.

    Such a card is the run's figures, which need not be its LoggedModel's (a figure corrected on the run), or a version
    registered before LoggedModels: the LoggedModels cannot say which versions rank first.
    """
    found = client.search_registered_models(filter_string=f"name = '{model_name}'", max_results=1)
    return not found or names.TAG_CARDS_REWRITTEN in (found[0].tags or {})


def point_filter(k: Constraints, fingerprint: str) -> tuple[str, dict[str, str]] | None:
    """The LoggedModels' filter on the server, and the operating point's other tags, checked here (:func:`_wanted`).

    One tag on the server, the runner: each tag or metric filtered there is one more join with MLflow's ordering
    window. ``bench/rest_calls.py`` times that search's first page: on a PostgreSQL-backed server at 10,000 versions
    one tag 0.1 s, two 2.5 s, four 25 s (a SQLite-backed one 0.13-0.16 s for each). The rest of the point, the
    families and the budgets feasibility implies are checked on each LoggedModel as it comes, before its versions are
    read.
    """
    tags = {
        names.TAG_RUNNER: k.target,
        names.TAG_PRECISION: k.effective_precision,
        names.TAG_BATCH_SIZE: str(k.batch_size),
        names.TAG_FINGERPRINT: fingerprint,
    }
    if k.threads is not None:
        tags[names.TAG_THREADS] = str(k.threads)
    if k.host is not None:
        tags[names.TAG_HOST] = k.host
    if not all(_plain(v) for v in tags.values()):
        return None
    return f"tags.`{names.TAG_RUNNER}` = '{k.target}'", tags


def _wanted(lm: Any, tags: dict[str, str], figures: dict[str, float], k: Constraints) -> bool:
    """The LoggedModel is at the operating point, of a wanted family, and within the budgets judged on a figure alone.

    A missing or non-finite figure fails a budget, as a server's ``metrics.x <= limit`` does.
    """
    got = lm.tags or {}
    if any(got.get(key) != value for key, value in tags.items()):
        return False
    if k.families is not None and got.get(names.TAG_FAMILY) not in k.families:
        return False
    for budget, metric in _UNBOUNDED:
        limit = getattr(k, budget)
        value = figures.get(metric)
        if limit is not None and float(limit) >= 0 and not (value is not None and value <= float(limit)):
            return False  # a negative limit is left to judge (nothing passes it)
    return True


def newest_fingerprint(client: Any, model_name: str, k: Constraints) -> str | None:
    """The fingerprint of the newest usable candidate at ``k``'s point (the index's rule), or None when not found.

    The versions whose card starts with the point (``LIKE``: a superset), newest first by (creation time, version):
    the first usable one at the point is the newest, unless the page ends on its creation time (then not sure).
    """
    filt = f"name = '{model_name}' AND tags.`{names.TAG_CARD}` LIKE '{point_prefix(k)}%'"
    token = None
    for _ in range(NEWEST_PAGES):
        page = client.search_model_versions(
            filt, max_results=NEWEST_PAGE, order_by=["creation_timestamp DESC", "version_number DESC"],
            page_token=token,
        )  # fmt: skip
        built = [_candidate(model_name, mv) for mv in page]
        usable = [c for c in built if c is not None and at_point(c, k)]
        if usable:
            newest = max(usable, key=lambda c: (c.created_ms, int(c.version)))
            last = int(page[-1].creation_timestamp or 0)
            if page.token and last == newest.created_ms:
                return None  # a version of the same millisecond may follow
            return newest.fingerprint
        token = page.token
        if not token:
            return None
    return None


def _candidate(model_name: str, mv: Any) -> Candidate | None:
    """What the index makes of a version (``versions.rows_of``): READY, ``ok``, a readable card."""
    return rows_of(model_name, [mv]).by_version.get(int(mv.version))


def _figures(lm: Any) -> dict[str, float] | None:
    """The LoggedModel's metrics by name; None when one has several values (which is its figure is unclear)."""
    out: dict[str, float] = {}
    for m in lm.metrics or []:
        value = float(m.value)
        if m.key in out and out[m.key] != value:
            return None
        out[m.key] = value
    return out


def _by_source(client: Any, model_name: str, models: list[Any]) -> dict[str, list[Any]]:
    """The live versions of the LoggedModels' runs (one request), by source; {} when they are too many for one."""
    runs = sorted({lm.source_run_id for lm in models if lm.source_run_id and _plain(lm.source_run_id)})
    if not runs:
        return {}
    quoted = ", ".join(f"'{r}'" for r in runs)
    found = client.search_model_versions(
        f"name = '{model_name}' AND run_id IN ({quoted})", max_results=VERSIONS_PER_PAGE
    )
    if found.token:
        return {}  # runs with many versions: each LoggedModel's linked ones asked for one by one
    out: dict[str, list[Any]] = {}
    for mv in found:
        out.setdefault(mv.source or "", []).append(mv)
    return out


def _versions(
    client: Any, model_name: str, lm: Any, figures: dict[str, float], batch: dict[str, list[Any]]
) -> list[Candidate] | None:
    """The candidates registered from ``lm`` in ``model_name``, each card checked against it; None: not sure.

    Its versions are those of its run registered from it (``batch``) and those its ``mlflow.modelVersions`` tag
    links (each one not among them asked for: registered with another run id, or deleted).
    """
    try:
        links = json.loads(lm.tags.get(LINKS) or "null")
    except ValueError:
        return None
    if not isinstance(links, list):
        return None  # no link: a version registered from it would go unseen
    source = f"models:/{lm.model_id}"
    versions = {str(mv.version): mv for mv in batch.get(source, [])}
    linked = {str(link.get("version")) for link in links if isinstance(link, dict) and link.get("name") == model_name}
    for version in sorted(linked - set(versions), key=lambda v: (len(v), v)):
        try:
            versions[version] = client.get_model_version(model_name, version)
        except Exception as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                continue  # deleted since: no candidate
            raise
    out = []
    for _, mv in sorted(versions.items(), key=lambda kv: int(kv[0])):
        if mv.source != source:
            return None
        c = _candidate(model_name, mv)
        if c is None:
            continue  # failed, not READY or no readable card: no candidate, as in the index
        if not _agrees(c, lm.tags, figures):
            return None
        out.append(c)
    return out


def _agrees(c: Candidate, tags: dict[str, str], figures: dict[str, float]) -> bool:
    """The version's card says what its LoggedModel's tags and metrics say (``names.card`` writes it from them)."""
    point = (
        tags.get(names.TAG_RUNNER, ""),
        tags.get(names.TAG_PRECISION, ""),
        tags.get(names.TAG_BATCH_SIZE) or "1",
        tags.get(names.TAG_THREADS) or "all",
        tags.get(names.TAG_FINGERPRINT, ""),
        tags.get(names.TAG_FAMILY, ""),
        tags.get(names.TAG_HOST, ""),
    )
    if point != (c.runner, c.precision, str(c.batch_size), c.threads, c.fingerprint, c.family, c.host):
        return False
    for metric in names.CARD_METRICS:
        value = figures.get(metric)
        if value is not None and not math.isfinite(value):
            value = None  # the card holds no non-finite figure
        if c.metrics.get(metric) != value:
            return False
    return True


def _plain(value: str) -> bool:
    """Safe inside a quoted filter value."""
    return bool(value) and not any(ch in value for ch in "'`\\%")
