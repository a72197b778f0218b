"""The job's steps as plain functions with JSON-able inputs and outputs: the DAG's tasks and the CLI call these."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from catalog import get_profile
from evaluators.memory import frozen_heap
from registry.settings import Settings

log = logging.getLogger(__name__)

# The README's two example constraint sets, answered at the end of the demo.
EXAMPLES: dict[str, dict[str, Any]] = {
    "edge-like": {
        "target": "edge",
        "max_latency_ms": 2.0,
        "latency_percentile": 95,
        "max_params_m": 6.0,
        "min_top1": 0.8,
    },
    "server-like": {"target": "cpu", "max_latency_ms": 10.0, "latency_percentile": 99, "min_top1": 0.95},
}


@contextlib.contextmanager
def task_output() -> Iterator[None]:
    """Inside an Airflow task: progress libraries print to stderr goes to stdout (the task log's INFO lines).

    Airflow shows every stderr line as an ERROR, MLflow's "Created version '3' of model" included. MLflow's own log
    records reach Airflow's handlers at their level when MLflow does not install its stderr handler
    (``MLFLOW_CONFIGURE_LOGGING=false``, set by the DAG files before anything imports MLflow).
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a new MLflow store logs each of its ~75 migrations
    with contextlib.redirect_stderr(sys.stdout):
        yield


@frozen_heap()
def prepare_data(
    dataset_dir: str | None = None, settings: Settings | None = None, classes: list[str] | None = None
) -> dict[str, Any]:
    """Write the bundled digits once (default) or scan a user ImageFolder, then run the data gate on it.

    ``classes`` is the label map the models will be scored against (default: the class folders found). A failing
    gate raises ``evaluators.gates.GateError`` after recording its result in MLflow: no model is evaluated.
    """
    from evaluators.data import load_manifest, write_digits

    settings = settings or Settings()
    if dataset_dir:
        manifest = load_manifest(dataset_dir, settings.manifest_dir)
    else:
        manifest = write_digits(settings.default_dataset_dir, settings.manifest_dir, seed=settings.seed)
    manifest.split("heldout")  # raises a DatasetError naming the folder when missing
    for rel, why in sorted(manifest.quarantined().items()):  # in the task log and the terminal; MLflow has them too
        log.warning("quarantined %s: %s", rel, why)
    gate = gate_data(manifest, settings, classes)
    return {
        "root": str(Path(manifest.root).resolve()),
        "name": manifest.name,
        "digest": manifest.digest,
        "classes": len(manifest.classes),
        "counts": {s: m.count for s, m in manifest.splits.items()},
        "quarantined": manifest.quarantined(),
        "gate": gate,
    }


def gate_data(manifest: Any, settings: Settings | None = None, classes: list[str] | None = None) -> dict[str, Any]:
    """The held-out data gate (GX): logged as a ``gate/cnnselect.heldout_data`` run with the validation result.

    Returns ``{"suite", "success", "run_id", "reused"}``; raises ``GateError`` (after logging) when the data fails.
    Incremental: the gate's verdict is a function of the manifest (the digest of the readable images and the list of
    unreadable ones), the gate's settings and the evaluator version, so a dataset that passed with the same three is
    not validated again (its earlier gate run is returned).
    """
    import hashlib
    import json

    from evaluators.gates import DATA_SUITE, DataGateConfig
    from registry import names
    from registry.tracking import find_gate_run
    from registry.writes import log_gate

    settings = settings or Settings()
    names.validate_name("dataset", manifest.name)  # before anything reaches a path or a filter string
    config = DataGateConfig(
        classes=tuple(classes) if classes else None, max_quarantined_fraction=settings.max_quarantined_fraction
    )
    skipped = {name: sorted(split.quarantined) for name, split in sorted(manifest.splits.items())}  # left out
    spec = json.dumps([manifest.digest, skipped, repr(config), names.EVALUATOR_VERSION])
    key = f"gate-{DATA_SUITE}-{hashlib.sha256(spec.encode()).hexdigest()[:32]}"
    passed = find_gate_run(settings, manifest.name, key, passed=True)
    if passed is not None:
        log.info("gate %s passed before for digest %s (MLflow run %s)", DATA_SUITE, manifest.digest[:12], passed)
        return {"suite": DATA_SUITE, "success": True, "run_id": passed, "reused": True}

    from evaluators.gates import GateError, check_data  # GX: seconds to import, only when the data is new

    result = check_data(manifest, config)
    run_id = log_gate(settings, manifest.name, result.suite, result.to_json(), result.success, key)
    if not result.success:
        log.error("%s (MLflow run %s)", result.summary(), run_id)
        raise GateError(result)
    log.info("%s (MLflow run %s)", result.summary(), run_id)
    return {"suite": result.suite, "success": True, "run_id": run_id, "reused": False}


def plan(
    profile: str,
    models: list[str] | None = None,
    dataset: dict[str, Any] | None = None,
    discover_new: bool = False,
    cold_start: bool = False,
    settings: Settings | None = None,
    discover_limit: int | None = None,
) -> list[str]:
    """The variants to evaluate: the profile's, or an explicit list (validated later, one model at a time).

    With ``cold_start`` (and no explicit list), the guide's shortlist (:func:`registry.recommend`) of every team that
    nothing measured on ``dataset`` satisfies yet comes first, so the sweep measures those before the rest. With
    ``discover_new``, also what :func:`discover` finds not yet measured on ``dataset`` (at most ``discover_limit``
    of them per sweep, so a nightly run crawls the families a few variants at a time).
    """
    chosen = list(models) if models else list(get_profile(profile).models)
    asked = list(chosen)
    if (cold_start or discover_new) and dataset is None:
        raise ValueError("cold_start and discover_new need the dataset (prepare_data's output)")
    if cold_start and not models and dataset is not None:
        first = cold_start_shortlist(dataset["name"], settings)
        chosen = list(dict.fromkeys([*first, *chosen]))
    cold = [n for n in chosen if n not in asked]
    if discover_new and dataset is not None:
        found = [n for n in discover(chosen, dataset["name"], settings) if n not in chosen]
        chosen += found[:discover_limit] if discover_limit is not None else found
    found_new = [n for n in chosen if n not in asked and n not in cold]
    log.info("plan: %d asked %s; cold start added %s; discovery added %s", len(asked), asked, cold or "none",
             found_new or "none")  # fmt: skip
    return chosen


def check_request(models: list[str], runners: list[str], weights: str, queued: list[str]) -> list[str]:
    """The requested runners, once every name in the request is known; else one ValueError naming each bad one.

    ``queued``: the runners the DAG has a queue for. Each unknown model is named once, with the closest names.
    """
    import catalog
    from catalog._nametable import UnknownNameError
    from catalog.weights import SOURCES
    from evaluators.runners import RUNNER_NAMES

    problems = []
    for name in dict.fromkeys(models):
        try:
            catalog.get_entry(name)
        except UnknownNameError as exc:
            problems.append(str(exc))
    for name in dict.fromkeys(runners):
        if name not in RUNNER_NAMES or name not in queued:
            problems.append(str(UnknownNameError("runner", name, [r for r in RUNNER_NAMES if r in queued],
                                                 listing="`cnnselect runners` lists them")))  # fmt: skip
    named = [s for s in SOURCES if s != "file"]
    if weights not in named and not (weights.startswith("file:") and weights[len("file:") :]):
        problems.append(f"unknown weights {weights!r}: use one of {', '.join(named)} or file:<path or URI>")
    if not runners:
        problems.append(f"no runner requested: name at least one of {', '.join(queued)}")
    if problems:
        raise ValueError("\n".join(problems))
    return list(dict.fromkeys(runners))


def missed_slot(run_type: str, slot: Any, started: Any, grace_minutes: int) -> bool:
    """Whether a cron run started more than ``grace_minutes`` after its slot (a missed night, a DAG just unpaused).

    Airflow starts the latest past cron slot of a DAG with ``catchup=False`` as soon as it is unpaused: at noon,
    that would be the nightly sweep in the middle of someone's first hour. Decided from the run's own slot and start
    (the same on a retry), never from the clock.
    """
    if run_type != "scheduled" or slot is None or started is None:
        return False
    return bool((started - slot).total_seconds() > 60 * grace_minutes)


DISCOVER_MODES = ("scheduled", "always", "never")


def discovery_on(mode: str, run_type: str) -> bool:
    """Whether a DAG run pulls new family variants.

    ``scheduled`` (the default) does it on the cron runs only, so a manual run measures exactly what was asked;
    ``always`` / ``never`` force it.
    """
    if mode not in DISCOVER_MODES:
        raise ValueError(f"discover mode {mode!r}; valid: {', '.join(DISCOVER_MODES)}")
    return mode == "always" or (mode == "scheduled" and run_type == "scheduled")


def cold_start_shortlist(dataset: str, settings: Settings | None = None, teams: str | None = None) -> list[str]:
    """The guide's shortlist for each team on ``dataset`` whose constraints nothing measured satisfies yet.

    A team file that does not parse is logged and left out (``cnn_promotion`` reports it); it never stops the sweep.
    """
    from registry.client import Registry
    from registry.errors import RegistryError
    from registry.recommend import recommend
    from registry.teams import parse_team, teams_dir

    reg = Registry(settings=settings or Settings())
    shortlist: list[str] = []
    for path in sorted(teams_dir(teams, reg.settings).glob("*.yaml")):
        try:
            team = parse_team(path)
        except RegistryError as exc:
            log.warning("cold start: skipping %s: %s", path.name, exc)
            continue
        if team.constraints.dataset != dataset:
            continue
        try:
            reg.get_best(team.constraints)
            continue  # satisfied already: its shortlist need not jump the queue
        except RegistryError as exc:
            picks = recommend(team.constraints)
            log.info("cold start for team %s (%s): measuring %s first", team.name, type(exc).__name__, picks)
            shortlist += picks
    return list(dict.fromkeys(shortlist))


def discover(variants: list[str], dataset: str, settings: Settings | None = None) -> list[str]:
    """Catalog variants of the same families and new timm pretrained tags of the same architectures, not yet measured.

    The periodic "pull the CNN families" step: what the installed timm offers that this dataset has no measurement of.
    """
    import catalog
    from registry.client import Registry

    entries = []
    for v in variants:
        try:
            entries.append(catalog.get_entry(v))
        except catalog.UnknownNameError:
            continue
    families = {e.family for e in entries}
    measured = {c.variant for c in Registry(settings=settings or Settings()).candidates(dataset)}
    same_family = [e.name for e in catalog.list_entries() if e.family in families]
    new_tags = catalog.new_pretrained_tags({e.architecture for e in entries})
    found = [n for n in same_family + new_tags if n not in measured and n not in variants]
    log.info("discovered %d unmeasured variants for %s: %s", len(found), dataset, found)
    return found


def pull(variant: str, profile: str, dataset_root: str, weights: str = "finetune") -> dict[str, Any]:
    """Fine-tune (or resolve) a variant once; the per-runner measurements reuse the cached weights."""
    from cnnselect.pipeline import pull_weights

    return pull_weights(variant, get_profile(profile), dataset_root, weights)


def evaluate(
    variant: str,
    profile: str,
    dataset_root: str,
    runners: list[str],
    sweep: str,
    weights: str = "finetune",
    settings: Settings | None = None,
    progress: Any = None,
    latency: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One model on its runners (``latency``: ``LatencySettings`` fields, for benchmarks of reduced settings)."""
    from cnnselect.pipeline import evaluate_model
    from evaluators.latency import LatencySettings

    outcomes = evaluate_model(
        variant,
        get_profile(profile),
        dataset_root,
        tuple(runners),
        sweep,
        weights,
        settings or Settings(),
        progress,
        LatencySettings(**latency) if latency else None,
    )
    return [o.to_dict() for o in outcomes]


def evaluate_isolated(
    variant: str,
    profile: str,
    dataset_root: str,
    runners: list[str],
    sweep: str,
    weights: str = "finetune",
    progress: Any = None,
    latency: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate` in a child process, so a model that runs out of memory fails alone and the sweep goes on.

    What was measured already is skipped here, without a child. A child killed by the kernel (the OOM killer's
    SIGKILL) or dying otherwise is recorded as a FAILED run per runner, naming the last stage it reported and its
    exit status. Each message the child reports reaches ``progress``.
    """
    import multiprocessing
    import queue

    from catalog import get_profile
    from cnnselect.pipeline import ModelJob, validate_variant
    from evaluators.data import load_manifest

    settings = Settings()
    validate_variant(variant)
    job = ModelJob(
        variant,
        get_profile(profile),
        load_manifest(dataset_root, settings.manifest_dir),
        tuple(runners),
        sweep,
        weights,
        settings,
        progress or (lambda m: None),
        None,
    )
    if not job.pending():
        return [job.outcomes[r].to_dict() for r in runners]
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold threads and open stores
    messages: Any = ctx.Queue()
    child = ctx.Process(
        target=_evaluate_child,
        args=(messages, variant, profile, dataset_root, runners, sweep, weights, latency, _log_levels()),
        daemon=True,
    )
    child.start()
    last, result = "start", None
    while result is None:
        try:
            kind, payload = messages.get(timeout=0.5)
        except queue.Empty:
            if not child.is_alive():
                break
            continue
        if kind == "progress":
            last = payload
            if progress:
                progress(payload)
        else:
            result = payload
    child.join()
    if result is not None:
        return list(result)
    code = child.exitcode
    why = "killed by SIGKILL (the kernel's out-of-memory killer?)" if code == -9 else f"exit status {code}"
    err = MemoryError(f"the evaluation process died ({why}) after: {last}") if code == -9 else RuntimeError(why)
    return [job.fail(r, err, stage="memory" if code == -9 else "process").to_dict() for r in job.pending()]


SUMMARY_METRICS = ("top1", "top1_ci_low", "top5", "latency_p50_ms", "latency_p95_ms", "size_mb", "peak_rss_mb")


def outcome_summary(out: dict[str, Any]) -> str:
    """A few lines a task log ends with: what was measured, the headline figures, where it was logged."""
    lines = [f"{out['variant']} on {out['runner']}: {out['status']}"]
    for m in SUMMARY_METRICS:
        if m in out.get("metrics", {}):
            lines.append(f"  {m:<16} {out['metrics'][m]:.4g}")
    for k in ("run_id", "model_uri", "stage", "error"):
        if out.get(k):
            lines.append(f"  {k:<16} {out[k]}")
    return "\n".join(lines)


def _log_levels() -> dict[str, int]:
    """The levels this process set on its loggers (``""``: the root), for a child to log the same way."""
    levels = {"": logging.getLogger().level}
    for name, obj in logging.root.manager.loggerDict.items():
        if isinstance(obj, logging.Logger) and obj.level != logging.NOTSET:
            levels[name] = obj.level
    return levels


def _evaluate_child(
    messages: Any,
    variant: str,
    profile: str,
    dataset_root: str,
    runners: list[str],
    sweep: str,
    weights: str,
    latency: dict[str, Any] | None,
    levels: dict[str, int],
) -> None:
    logging.basicConfig(level=levels.pop("", logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    for name, level in levels.items():  # the parent's muting (noisy libraries, the CLI's own summaries)
        logging.getLogger(name).setLevel(level)

    def report(msg: str) -> None:
        messages.put(("progress", msg))

    out = evaluate(variant, profile, dataset_root, runners, sweep, weights, progress=report, latency=latency)
    messages.put(("result", out))


def leaderboard(dataset: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every evaluated (model, runner) of the dataset, best top-1 first, with its place on its host's frontier.

    ``on_frontier``: no other runtime/precision of the same model on the same host is both faster (p95) and at least
    as accurate (:mod:`cnnselect.frontier`).
    """
    from cnnselect.frontier import runtime_frontiers
    from registry.client import Registry

    reg = Registry(settings=settings or Settings())
    candidates = reg.candidates(dataset)
    artifacts = {
        a.candidate.uri: a
        for models in runtime_frontiers(candidates).values()
        for arts in models.values()
        for a in arts
    }
    rows = []
    for c in candidates:
        m = c.metrics
        art = artifacts.get(c.uri)
        rows.append(
            {
                "variant": c.variant,
                "runner": c.runner,
                "precision": c.precision,
                "top1": m.get("top1"),
                "latency_p95_ms": m.get("latency_p95_ms"),
                "params_m": m.get("params_m"),
                "gmacs": m.get("gmacs"),
                "size_mb": m.get("size_mb"),
                "threads": c.threads,
                "host": c.host or None,
                # on its model's runtime frontier on its host; None: no host id, or a newer measurement replaced it
                "on_frontier": art.on_frontier if art else None,
                "fastest_on_host": art.fastest if art else None,
                "uri": c.uri,
            }
        )
    return sorted(rows, key=lambda r: (r["runner"], -(r["top1"] or 0.0), r["variant"]))


def answer(constraints: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """``get_best`` as a JSON-able dict: the winner, or the error with the nearest misses."""
    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.errors import NoFeasibleModelError, RegistryError

    k = Constraints(**constraints)
    try:
        a = Registry(settings=settings or Settings()).get_best(k)
    except RegistryError as exc:
        near = [verdict_dict(v) for v in exc.nearest] if isinstance(exc, NoFeasibleModelError) else []
        error = {"constraints": k.model_dump(), "error": type(exc).__name__, "message": str(exc), "nearest": near}
        return {**error, "on_host": k.on_host}
    chosen, *rest = a.explained()
    return {
        "constraints": k.model_dump(),
        "variant": a.candidate.variant,
        "uri": a.uri,
        "runtime": a.runtime,
        "precision": a.precision,
        "threads": a.threads,
        "host": a.host,
        "on_host": k.on_host,
        "metrics": {
            m: a.metrics.get(m)
            for m in ("top1", "top1_ci_low", k.latency_metric, f"{k.latency_metric[:-3]}_ub_ms", "params_m", "size_mb")
        },
        "explanation": a.explain(),
        "verdicts": [verdict_dict(chosen, chosen=True), *(verdict_dict(v) for v in rest)],
    }


def verdict_dict(v: Any, chosen: bool = False) -> dict[str, Any]:
    """One judged candidate as JSON; ``label`` is ``chosen`` for the answer.

    ``checks`` are the clauses that decided it: every check of a feasible one, the failed ones otherwise.
    """
    c = v.candidate
    checks = v.checks if v.label == "feasible" else v.failed or v.checks
    return {
        "variant": c.variant,
        "version": c.version,
        "uri": c.uri,
        "runtime": c.runner,
        "precision": c.precision,
        "label": "chosen" if chosen else v.label,
        "checks": [ch.describe() for ch in checks],
    }


def summarize(dataset: str, sweep: str, settings: Settings | None = None) -> dict[str, Any]:
    """What one sweep did, read back from MLflow (XCom carries ids, the store holds the results)."""
    from registry.tracking import sweep_runs

    runs = sweep_runs(settings or Settings(), dataset, sweep)
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] == "failed"]
    return {
        "sweep": sweep,
        "ok": len(ok),
        "failed": [{"run": r["run_id"], "error": r["tags"].get("cnnselect.error", "")[:300]} for r in failed],
    }
