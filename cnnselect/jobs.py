"""The job's steps as plain functions with JSON-able inputs and outputs: the DAG's tasks and the CLI call these."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from catalog import get_profile
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
        manifest = load_manifest(dataset_dir)
    else:
        manifest = write_digits(settings.default_dataset_dir, seed=settings.seed)
    for split in ("heldout",):
        manifest.split(split)  # raises a DatasetError naming the folder when missing
    gate = gate_data(manifest, settings, classes)
    return {
        "root": str(Path(manifest.root).resolve()),
        "name": manifest.name,
        "digest": manifest.digest,
        "classes": len(manifest.classes),
        "counts": {s: m.count for s, m in manifest.splits.items()},
        "skipped": {s: m.skipped for s, m in manifest.splits.items() if m.skipped},
        "gate": gate,
    }


def gate_data(manifest: Any, settings: Settings | None = None, classes: list[str] | None = None) -> dict[str, Any]:
    """The held-out data gate (GX): logged as a ``gate/cnnselect.heldout_data`` run with the validation result.

    Returns ``{"suite", "success", "run_id"}``; raises ``GateError`` (after logging) when the data fails.
    """
    from evaluators.gates import DataGateConfig, GateError, check_data
    from registry import names
    from registry.tracking import log_gate

    settings = settings or Settings()
    names.validate_name("dataset", manifest.name)  # before anything reaches a path or a filter string
    result = check_data(manifest, DataGateConfig(classes=tuple(classes) if classes else None))
    key = f"gate-{result.suite}-{manifest.digest[:32]}"
    run_id = log_gate(settings, manifest.name, result.suite, result.to_json(), result.success, key)
    if not result.success:
        log.error("%s (MLflow run %s)", result.summary(), run_id)
        raise GateError(result)
    log.info("%s (MLflow run %s)", result.summary(), run_id)
    return {"suite": result.suite, "success": True, "run_id": run_id}


def plan(profile: str, models: list[str] | None = None, dataset: dict[str, Any] | None = None) -> list[str]:
    """The variants to evaluate: the profile's, or an explicit list (validated later, one model at a time).

    With ``dataset``, also what :func:`discover` finds not yet measured on it.
    """
    chosen = list(models) if models else list(get_profile(profile).models)
    if dataset is not None:
        chosen += [n for n in discover(chosen, dataset["name"]) if n not in chosen]
    return chosen


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
) -> list[dict[str, Any]]:
    from cnnselect.pipeline import evaluate_model

    outcomes = evaluate_model(
        variant, get_profile(profile), dataset_root, tuple(runners), sweep, weights, settings or Settings(), progress
    )
    return [o.to_dict() for o in outcomes]


def leaderboard(dataset: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every evaluated (model, runner) of the dataset, best top-1 first."""
    from registry.client import Registry

    reg = Registry(settings=settings or Settings())
    rows = []
    for c in reg.candidates(dataset):
        m = c.metrics
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
                "uri": c.uri,
            }
        )
    return sorted(rows, key=lambda r: (r["runner"], -(r["top1"] or 0.0), r["variant"]))


def answer(constraints: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """``get_best`` as a JSON-able dict: the winner, or the error with the nearest misses."""
    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.errors import RegistryError

    k = Constraints(**constraints)
    try:
        a = Registry(settings=settings or Settings()).get_best(k)
    except RegistryError as exc:
        return {"constraints": k.model_dump(), "error": type(exc).__name__, "message": str(exc)}
    return {
        "constraints": k.model_dump(),
        "variant": a.candidate.variant,
        "uri": a.uri,
        "metrics": {
            m: a.metrics.get(m)
            for m in ("top1", "top1_ci_low", k.latency_metric, f"{k.latency_metric[:-3]}_ub_ms", "params_m", "size_mb")
        },
        "explanation": a.explain(),
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
