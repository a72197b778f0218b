"""One model through the whole job: pull -> export -> evaluate on each runner -> log. Shared by the DAG and the CLI.

A failure at any stage is recorded as a FAILED MLflow run naming the model, the runner and the stage; it never
touches what was already logged, and the other runners (and models) carry on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from catalog import CatalogEntry, Profile, get_entry
from evaluators.data import DatasetManifest, Preprocess, load_manifest, load_split
from registry import names
from registry.settings import Settings
from registry.tracking import DatasetRef

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class Outcome:
    """What happened to one (model, runner): ``ok``, ``skipped`` (already measured) or ``failed``."""

    variant: str
    runner: str
    status: str
    run_id: str | None = None
    model_uri: str | None = None
    stage: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}


def dataset_ref(manifest: DatasetManifest) -> DatasetRef:
    held = manifest.split("heldout")
    return DatasetRef(manifest.name, manifest.digest, str(manifest.root), manifest.classes, held.digest, held.count)


def idempotency_key(
    variant: str,
    runner: str,
    profile: Profile,
    weights: str,
    dataset_digest: str,
    seed: int,
    fingerprint: str = "",
) -> str:
    """What makes a measurement the same one: model and weights recipe, dataset, runner fingerprint, evaluator version.

    ``fingerprint`` is the runner's fingerprint id (hardware and runtime versions): the same model measured on another
    CPU or after an onnxruntime upgrade is a new measurement, not a rerun.
    """
    spec = {
        "variant": variant,
        "runner": runner,
        "image_size": profile.image_size,
        "epochs": profile.epochs if weights == "finetune" else 0,
        "weights": weights,
        "seed": seed,
        "dataset": dataset_digest,
        "evaluator": names.EVALUATOR_VERSION,
    }
    if fingerprint:
        spec["fingerprint"] = fingerprint
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def runner_fingerprint_id(runner: str, image_size: int) -> str:
    """The fingerprint id a measurement on ``runner`` would carry here (cheap: no model, no session)."""
    from evaluators.runners import fingerprint_id, get_runner

    try:
        return fingerprint_id(get_runner(runner).fingerprint(batch_size=1, image_size=image_size))
    except Exception as exc:  # an unknown or broken runner is recorded as a failure by the caller
        log.debug("no fingerprint for %s: %s", runner, exc)
        return "unavailable"


def weights_cache_path(
    settings: Settings, variant: str, profile: Profile, weights: str, dataset_digest: str
) -> Path | None:
    """Where fine-tuned weights are kept, keyed on everything that determines them; None for cheap sources."""
    if weights != "finetune":
        return None
    key = idempotency_key(variant, "-", profile, weights, dataset_digest, settings.seed)
    return settings.cache_dir / "weights" / f"{validate_variant(variant)}-{key}.safetensors"


def validate_variant(variant: str) -> str:
    return names.validate_name("model", variant)


def save_weights(model: Any, path: Path) -> None:
    """Atomically write a state dict as safetensors (never a pickle)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def pull_weights(
    variant: str,
    profile: Profile,
    dataset_root: str | Path,
    weights: str = "finetune",
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pull (fine-tune) a variant once and cache its weights, so each runner's measurement reuses them.

    Idempotent: a cache hit returns at once. Cheap sources (hub, file) are left to the measuring task.
    """
    from catalog.weights import weights_digest

    settings = settings or Settings()
    say = progress or (lambda msg: log.info("%s: %s", variant, msg))
    manifest = load_manifest(dataset_root)
    cache = weights_cache_path(settings, variant, profile, weights, manifest.digest)
    if cache is None or cache.exists():
        return {"variant": variant, "weights": weights, "cached": str(cache) if cache else None, "trained": False}
    entry = get_entry(variant)
    pre = preprocess_for(entry, profile.image_size)
    x_train, y_train = load_split(manifest, "train", pre, settings.cache_dir)
    source = _weights_source(weights, profile, x_train, y_train, settings.seed, say)
    pulled = source.pull(entry, len(manifest.classes))
    save_weights(pulled.model, cache)
    return {
        "variant": variant,
        "weights": weights,
        "cached": str(cache),
        "trained": True,
        "weights_digest": weights_digest(pulled.model),
    }


def preprocess_for(entry: CatalogEntry, image_size: int) -> Preprocess:
    """Mean, std and interpolation from timm's pretrained config for the entry, at the evaluation size."""
    import timm

    cfg = timm.get_pretrained_cfg(entry.name) if entry.pretrained_tag else None
    if cfg is None:
        return Preprocess(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    return Preprocess(
        image_size,
        tuple(float(v) for v in cfg.mean),  # type: ignore[arg-type]
        tuple(float(v) for v in cfg.std),  # type: ignore[arg-type]
        str(cfg.interpolation or "bicubic"),
    )


class StageError(RuntimeError):
    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage, self.cause = stage, exc


def _stage(stage: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise StageError(stage, exc) from exc


def _weights_source(weights: str, profile: Profile, x: np.ndarray, y: np.ndarray, seed: int, progress: Progress) -> Any:
    from catalog.weights import SOURCES, FileSource, FinetuneSource, ScratchSource, TimmHubSource

    if weights == "finetune":
        return FinetuneSource(
            x, y, epochs=profile.epochs, seed=seed, progress=lambda e, loss: progress(f"epoch {e} loss {loss:.3f}")
        )
    if weights == "timm-hub":
        return TimmHubSource()
    if weights == "scratch":
        return ScratchSource(seed)
    if weights.startswith("file:"):
        return FileSource(weights[len("file:") :])
    raise ValueError(f"unknown weights source {weights!r}; valid: {', '.join(SOURCES)} (file as 'file:<path or uri>')")


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


def evaluate_model(
    variant: str,
    profile: Profile,
    dataset_root: str | Path,
    runners: tuple[str, ...] = ("cpu", "edge"),
    sweep: str = "manual",
    weights: str = "finetune",
    settings: Settings | None = None,
    progress: Progress | None = None,
    latency: Any = None,
) -> list[Outcome]:
    """Evaluate one variant on each runner; returns one outcome per runner (never raises for a model's fault).

    ``latency`` is an ``evaluators.latency.LatencySettings`` (default: its defaults, batch 1 and batch 8). What was
    measured already is found with one MLflow search before anything heavy (torch, GX) is imported.
    """
    from registry.retry import scrub
    from registry.tracking import filter_literal, find_finished_many, log_failure

    settings = settings or Settings()
    say = progress or (lambda msg: log.info("%s: %s", variant, msg))
    validate_variant(variant)  # the name reaches paths and MLflow tags: refuse '../x' and the like up front
    filter_literal("sweep id", sweep)  # the sweep id reaches MLflow filter strings: no quotes or control characters
    manifest = load_manifest(dataset_root)
    ds = dataset_ref(manifest)
    keys = {
        r: idempotency_key(
            variant, r, profile, weights, ds.digest, settings.seed, runner_fingerprint_id(r, profile.image_size)
        )
        for r in runners
    }

    def fail(runner: str, err: StageError | Exception, stage: str | None = None) -> Outcome:
        from evaluators.gates import GateError

        st = err.stage if isinstance(err, StageError) else (stage or "setup")
        msg = scrub(f"{variant} on {runner} failed at {st}: {err}", settings.resolved_tracking_uri)  # no secrets
        log.error(msg)
        cause = err.cause if isinstance(err, StageError) else err
        gate = {f"gates/{cause.result.suite}.json": cause.result.to_json()} if isinstance(cause, GateError) else None
        run_id = log_failure(settings, ds.name, variant, runner, st, msg, keys[runner], sweep, artifacts=gate)
        return Outcome(variant, runner, "failed", run_id=run_id, stage=st, error=msg)

    done = find_finished_many(settings, ds.name, list(keys.values()), variant=variant)
    outcomes: dict[str, Outcome] = {
        r: Outcome(variant, r, "skipped", run_id=done[keys[r]]) for r in runners if keys[r] in done
    }
    todo = [r for r in runners if r not in outcomes]
    if not todo:
        say("already measured, skipped")
        return [outcomes[r] for r in runners]

    from evaluators.accuracy import accuracy, predict_all, write_accuracy_artifacts
    from evaluators.export import check_parity, export_onnx
    from evaluators.gates import gate_evaluations
    from evaluators.latency import LatencySettings, measure_batches
    from evaluators.runners import TORCH_RUNNERS, PeakMemory, artifact_files, fingerprint_id, get_runner
    from evaluators.runners.base import ArrayCalibration
    from evaluators.runners.torch_cpu import save_torch_artifact
    from evaluators.size import measure_size
    from registry.tracking import Evaluation, log_evaluation

    work = settings.work_dir / re.sub(r"[^A-Za-z0-9_-]", "_", sweep) / variant  # no '..' or '/' from a sweep id
    try:
        entry = _stage("resolve", lambda: get_entry(variant))
        pre = preprocess_for(entry, profile.image_size)
        x_held, y_held = _stage("data", lambda: load_split(manifest, "heldout", pre, settings.cache_dir))
        x_cal, _ = _stage("data", lambda: load_split(manifest, "calibration", pre, settings.cache_dir))
        x_train, y_train = (
            _stage("data", lambda: load_split(manifest, "train", pre, settings.cache_dir))
            if weights == "finetune"
            else (x_cal[:0], y_held[:0])
        )
        say(f"pull ({weights})")
        t0 = time.perf_counter()
        cache = weights_cache_path(settings, variant, profile, weights, ds.digest)
        if cache is not None and cache.exists():  # pulled before (the DAG's pull task, or an earlier sweep)
            from catalog.weights import FileSource

            source = FileSource(str(cache))
        else:
            source = _weights_source(weights, profile, x_train, y_train, settings.seed, say)
        pulled = _stage("pull", lambda: source.pull(entry, len(manifest.classes)))
        if cache is not None and not cache.exists():
            save_weights(pulled.model, cache)
        pull_s = time.perf_counter() - t0
        say("export ONNX")
        t0 = time.perf_counter()
        fp32 = _stage("export", lambda: export_onnx(pulled.model, x_held, work / "fp32"))
        if any(r in TORCH_RUNNERS for r in todo):  # the torch runners deploy the weights, not the graph
            _stage(
                "export", lambda: save_torch_artifact(pulled.model, entry.name, len(manifest.classes), fp32.path.parent)
            )
        export_s = time.perf_counter() - t0
        size = _stage("size", lambda: measure_size(pulled.model, profile.image_size, entry.input_size, fp32.bytes))
        reference = get_runner("cpu")
        ref_rss0 = _rss_mb()
        ref_session = _stage("parity", lambda: reference.load(fp32.path))
        ref_logits = _stage("parity", lambda: predict_all(lambda b: reference.predict(ref_session, b), x_held))
        parity = check_parity(pulled.model, ref_logits[:32], x_held[:32])
        fp32_acc = accuracy(ref_logits, y_held)
    except Exception as exc:
        for r in todo:
            outcomes[r] = fail(r, exc)
        return [outcomes[r] for r in runners]

    measured: dict[str, Evaluation] = {}  # runner -> what it measured, gated together below
    for r in todo:
        try:
            runner = _stage("runner", lambda: get_runner(r))  # noqa: B023
            avail = runner.availability()
            if not avail.available:
                raise StageError("runner", RuntimeError(f"runner {r!r} unavailable here: {avail.reason}"))
            say(f"{r}: prepare")
            artifact = _stage("prepare", lambda: runner.prepare(fp32.path, work / r, ArrayCalibration(x_cal)))  # noqa: B023
            if isinstance(runner, PeakMemory):
                runner.reset_peak_memory()
            if r == reference.name and artifact == fp32.path:  # the reference already ran this artifact on all images
                rss0, session, logits = ref_rss0, ref_session, ref_logits
            else:
                rss0 = _rss_mb()
                session = _stage("load", lambda: runner.load(artifact))  # noqa: B023
                say(f"{r}: accuracy on {len(x_held)} held-out images")
                logits = _stage(
                    "accuracy",
                    lambda: predict_all(lambda b: runner.predict(session, b), x_held),  # noqa: B023
                )
            acc = accuracy(logits, y_held)
            acc_files, acc_extra = _stage(
                "accuracy",
                partial(write_accuracy_artifacts, logits, y_held, manifest.classes, work / r / "acc", f"{variant} {r}"),
            )
            say(f"{r}: latency")
            x1 = np.ascontiguousarray(x_held[:1])
            lat_settings = latency or LatencySettings()
            predict = partial(runner.predict, session)
            lat = _stage("latency", partial(measure_batches, predict, runner.synchronize, x_held, lat_settings))
            mem = {"memory_rss_mb": max(0.0, _rss_mb() - rss0)}
            if isinstance(runner, PeakMemory):
                mem["memory_gpu_peak_mb"] = runner.peak_memory_mb()
            deploy_files = artifact_files(artifact)
            fp = runner.fingerprint(batch_size=1, image_size=profile.image_size)
            metrics = {
                **acc.to_metrics(),
                **acc_extra,
                **lat,
                **size.to_metrics(),
                **parity.to_metrics(),
                "size_mb": sum(p.stat().st_size for p in deploy_files) / 1e6,
                **mem,
                "top1_fp32": fp32_acc.top1,
                "top1_drop_vs_fp32": fp32_acc.top1 - acc.top1,
                "pull_seconds": pull_s,
                "export_seconds": export_s,
            }
            params = {
                "variant": variant,
                "architecture": entry.architecture,
                "family": entry.family.value,
                "runner": r,
                "precision": runner.precision,
                "image_size": profile.image_size,
                "native_size": entry.input_size,
                "weights_source": weights,
                "profile": profile.name,
                "num_classes": len(manifest.classes),
                "mean": pre.mean,
                "std": pre.std,
                "interpolation": pre.interpolation,
                **{f"train_{k}": v for k, v in pulled.details.items()},
            }
            if entry.published is not None:
                params.update(
                    published_params_m=entry.published.params_m,
                    published_gmacs=entry.published.gmacs,
                    published_top1=entry.published.top1,
                    published_source=entry.published.source,
                )
            ev = Evaluation(
                variant=variant,
                family=entry.family.value,
                runner=r,
                precision=runner.precision,
                dataset=ds,
                key=keys[r],
                sweep=sweep,
                fingerprint=fp,
                fingerprint_id=fingerprint_id(fp),
                weights_digest=pulled.weights_digest,
                weights_source=weights,
                artifact=artifact if artifact.suffix == ".onnx" else fp32.path,  # torch runners: the same weights
                input_example=x1,
                output_example=logits[:1],
                params=params,
                metrics=metrics,
                artifacts={**acc_files, **({} if artifact.suffix == ".onnx" else {p.stem: p for p in deploy_files})},
            )
            measured[r] = ev
        except Exception as exc:
            outcomes[r] = fail(r, exc)
    # One results gate over the model's runners; a failure is recorded (with the GX result) and nothing is registered
    published = entry.published and entry.published.params_m
    try:
        if measured:
            say(f"results gate ({', '.join(measured)})")
        gated: dict[str, Any] = gate_evaluations(
            list(measured.values()), pulled.model, published, [work / r for r in measured]
        )
    except Exception as exc:  # the gate itself broke: each runner fails at the gate, recorded
        gated = dict.fromkeys(measured, exc)
    for r, ev in measured.items():
        try:
            gate = gated[r]
            if isinstance(gate, Exception):
                raise StageError("gate", gate)
            ev.artifacts["gates"] = gate
            say(f"{r}: log to MLflow")
            logged = _stage("log", lambda: log_evaluation(settings, ev))  # noqa: B023
            outcomes[r] = Outcome(
                variant, r, "ok", run_id=logged.run_id, model_uri=logged.model_uri, metrics=ev.metrics
            )
        except Exception as exc:
            outcomes[r] = fail(r, exc)
    shutil.rmtree(work, ignore_errors=True)
    return [outcomes[r] for r in runners]
