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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from catalog import Profile, get_entry
from cnnselect.stages import StageCounts, StageError, run_stage
from evaluators.data import DatasetManifest, load_manifest
from evaluators.memory import frozen_heap
from registry import names
from registry.settings import Settings
from registry.tracking import DatasetRef, Evaluation

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


def operating_size(variant: str, profile: Profile) -> int | str:
    """The evaluation resolution: the profile's override, or the entry's own (timm's eval size for the tag)."""
    if profile.image_size:
        return profile.image_size
    try:
        return get_entry(variant).input_size
    except Exception:  # an unknown name is recorded as a failure by the caller
        return "native"


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
    CPU or after an onnxruntime upgrade is a new measurement, not a rerun. The resolution is the profile's override
    or ``native`` (the tag's own eval config, fixed by the timm version in the fingerprint).
    """
    from catalog.weights import TRAINED_SOURCES

    spec = {
        "variant": variant,
        "runner": runner,
        "image_size": profile.image_size or "native",
        "epochs": profile.epochs if weights in TRAINED_SOURCES else 0,
        "weights": weights,
        "seed": seed,
        "dataset": dataset_digest,
        "evaluator": names.EVALUATOR_VERSION,
    }
    if fingerprint:
        spec["fingerprint"] = fingerprint
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def runner_fingerprint_id(runner: str, image_size: int | str) -> str:
    """The fingerprint id a measurement on ``runner`` would carry here (cheap: no model, no session)."""
    from evaluators.runners import fingerprint_id, get_runner

    try:
        return fingerprint_id(get_runner(runner).fingerprint(batch_size=1, image_size=image_size))  # type: ignore[arg-type]
    except Exception as exc:  # an unknown or broken runner is recorded as a failure by the caller
        log.debug("no fingerprint for %s: %s", runner, exc)
        return "unavailable"


def preparation_key(variant: str, profile: Profile, weights: str, dataset_digest: str, seed: int) -> str:
    """What makes a prepared model (export, FP32 reference) the same one, whichever runner measures it.

    The model, its weights recipe, the data, and the versions of what exports and runs it
    (:func:`cnnselect.prepared.software_id`); no runner and no hardware: every worker of the deployment shares it.
    """
    from cnnselect.prepared import software_id

    return idempotency_key(variant, "prepared", profile, weights, dataset_digest, seed, software_id())


def weights_cache_path(
    settings: Settings, variant: str, profile: Profile, weights: str, dataset_digest: str
) -> Path | None:
    """Where trained weights are kept, keyed on everything that determines them; None for sources that do not train."""
    from catalog.weights import TRAINED_SOURCES

    if weights not in TRAINED_SOURCES:
        return None
    key = idempotency_key(variant, "-", profile, weights, dataset_digest, settings.seed)
    return settings.cache_dir / "weights" / f"{validate_variant(variant)}-{key}.safetensors"


def validate_variant(variant: str) -> str:
    return names.validate_name("model", variant)


def pull_weights(
    variant: str,
    profile: Profile,
    dataset_root: str | Path,
    weights: str = "finetune",
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a variant once (``finetune``, ``transfer``) and cache its weights for every runner's measurement.

    Idempotent: a cache hit returns at once. Sources that do not train (hub, file, scratch) are left to the measuring
    task. Raises for an unknown model or unusable data, so the pull task's state says so.
    """
    from cnnselect.inputs import Inputs

    settings = settings or Settings()
    say = progress or (lambda msg: log.info("%s: %s", variant, msg))
    manifest = load_manifest(dataset_root, settings.manifest_dir)
    cache = weights_cache_path(settings, variant, profile, weights, manifest.digest)
    entry = get_entry(variant)
    if cache is None or cache.exists():
        return {"variant": variant, "weights": weights, "cached": str(cache) if cache else None, "trained": False}
    pulled = Inputs(entry, manifest, profile, weights, settings, say, cache).pull()
    return {
        "variant": variant,
        "weights": weights,
        "cached": str(cache),
        "trained": True,
        "weights_digest": pulled.weights_digest,
    }


def _folder(files: list[Path], out: Path) -> Path:
    """The deployable artifact's files in one folder of their own (``deploy/`` on the run), linked, not copied."""
    folder = out / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f.name
        target.unlink(missing_ok=True)
        try:
            target.hardlink_to(f)
        except OSError:
            shutil.copy2(f, target)
    return folder


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


@frozen_heap()
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
    from registry.tracking import filter_literal

    settings = settings or Settings()
    say = progress or (lambda msg: log.info("%s: %s", variant, msg))
    validate_variant(variant)  # the name reaches paths and MLflow tags: refuse '../x' and the like up front
    filter_literal("sweep id", sweep)  # the sweep id reaches MLflow filter strings: no quotes or control characters
    manifest = load_manifest(dataset_root, settings.manifest_dir)
    job = ModelJob(variant, profile, manifest, runners, sweep, weights, settings, say, latency)
    return job.run()


def int8_max_drop(settings: Settings) -> float:
    """The top-1 an INT8 artifact may lose against FP32: the setting, or the strictest team's ``max_top1_drop``."""
    from registry.teams import scan_teams

    teams = scan_teams(settings.teams_dir).teams
    drops = [t.constraints.max_top1_drop for t in teams if t.constraints.max_top1_drop is not None]
    return min([settings.int8_max_top1_drop, *drops])


class ModelJob:
    """One model on its runners: resolve once, measure each runner, gate them together, log each."""

    def __init__(
        self,
        variant: str,
        profile: Profile,
        manifest: DatasetManifest,
        runners: tuple[str, ...],
        sweep: str,
        weights: str,
        settings: Settings,
        say: Progress,
        latency: Any,
    ) -> None:
        self.variant, self.profile, self.manifest, self.runners = variant, profile, manifest, runners
        self.sweep, self.weights, self.settings, self.say, self.latency = sweep, weights, settings, say, latency
        self.ds = dataset_ref(manifest)
        size = operating_size(variant, profile)
        self.keys = {
            r: idempotency_key(
                variant, r, profile, weights, self.ds.digest, settings.seed, runner_fingerprint_id(r, size)
            )
            for r in runners
        }
        self.outcomes: dict[str, Outcome] = {}
        self.calib_fp32: float | None = None  # the FP32 export's top-1 on the calibration split, once per model
        # no '..' or '/' from a sweep id
        self.work = settings.work_dir / re.sub(r"[^A-Za-z0-9_-]", "_", sweep) / variant

    def fail(self, runner: str, err: StageError | Exception, stage: str | None = None) -> Outcome:
        from evaluators.gates import GateError
        from registry.retry import scrub
        from registry.writes import log_failure

        st = err.stage if isinstance(err, StageError) else (stage or "setup")
        what = str(err) if isinstance(err, StageError) else f"{type(err).__name__}: {err}"  # never an empty reason
        msg = scrub(f"{self.variant} on {runner} failed at {st}: {what}", self.settings.resolved_tracking_uri)
        log.error(msg)
        cause = err.cause if isinstance(err, StageError) else err
        gate = {f"gates/{cause.result.suite}.json": cause.result.to_json()} if isinstance(cause, GateError) else None
        run_id = log_failure(
            self.settings, self.ds.name, self.variant, runner, st, msg, self.keys[runner], self.sweep, artifacts=gate
        )
        return Outcome(self.variant, runner, "failed", run_id=run_id, stage=st, error=msg)

    def pending(self) -> list[str]:
        """The runners not measured yet (one MLflow search); the others get a ``skipped`` outcome."""
        from registry.tracking import find_finished_many

        done = find_finished_many(self.settings, self.ds.name, list(self.keys.values()), variant=self.variant)
        for r in self.runners:
            if self.keys[r] in done:
                self.outcomes[r] = Outcome(self.variant, r, "skipped", run_id=done[self.keys[r]])
        return [r for r in self.runners if r not in self.outcomes]

    def run(self) -> list[Outcome]:
        todo = self.pending()
        if not todo:
            self.say("already measured, skipped")
            return [self.outcomes[r] for r in self.runners]
        todo = [r for r in todo if self._available(r)]  # before any weights are pulled or exported
        if not todo:
            return [self.outcomes[r] for r in self.runners]
        from evaluators.memory import StagePeaks

        self.peaks, self.stages = StagePeaks(), StageCounts()
        try:
            self.prepare()
        except Exception as exc:
            for r in todo:
                self.outcomes[r] = self.fail(r, exc)
            return [self.outcomes[r] for r in self.runners]
        measured = {}
        if self.reference.name not in todo:
            self.ref_session = None
        # the reference runner first, so its session (and the activations its arena holds) is freed before any
        # other runner converts or calibrates: with EfficientNet-B7 at 600 px that arena alone is gigabytes
        for r in sorted(todo, key=lambda r: r != self.reference.name):
            try:
                measured[r] = self.measure(r)
            except Exception as exc:
                self.outcomes[r] = self.fail(r, exc)
            self.ref_session = None
        self.gate_and_log(measured)
        shutil.rmtree(self.work, ignore_errors=True)
        return [self.outcomes[r] for r in self.runners]

    def _available(self, r: str) -> bool:
        """Whether runner ``r`` can run here; one that cannot is recorded as failed at once, with the reason."""
        from evaluators.runners import get_runner

        try:
            avail = get_runner(r).availability()
            if not avail.available:
                raise RuntimeError(f"runner {r!r} unavailable here: {avail.reason}")
        except Exception as exc:
            self.outcomes[r] = self.fail(r, StageError("runner", exc))
            return False
        return True

    def prepare(self) -> None:
        """Weights, export, size and the FP32 reference over the held-out split: once per model, for every runner.

        Found in the prepared-model cache (:mod:`cnnselect.prepared`) when another job of this model prepared it
        already (another queue's task, an earlier sweep); otherwise prepared here and kept there.
        """
        from cnnselect import prepared
        from cnnselect.inputs import Inputs
        from evaluators.accuracy import accuracy
        from evaluators.images import batch_size_for
        from evaluators.runners import get_runner

        entry = self.entry = run_stage("resolve", lambda: get_entry(self.variant))
        cache = weights_cache_path(self.settings, self.variant, self.profile, self.weights, self.ds.digest)
        with self.peaks.stage("data"):
            inputs = self.inputs = run_stage(
                "data", lambda: Inputs(entry, self.manifest, self.profile, self.weights, self.settings, self.say, cache)
            )
        self.bs = batch_size_for(inputs.pre.input_size)
        self.example = inputs.heldout.first(self.bs)
        self.reference = get_runner("cpu")
        self.ref_session = None
        key = preparation_key(self.variant, self.profile, self.weights, self.ds.digest, self.settings.seed)
        folder = prepared.prepared_dir(self.settings.cache_dir, self.variant, key)
        with prepared.lock(folder):  # another worker preparing this model: wait, then reuse what it kept
            found = prepared.load(folder, key, len(inputs.heldout))
            self.reused = found is not None
            if found is not None:
                self.say(f"prepared before ({key[:12]}): export, size and FP32 reference reused")
                self.ready, self.ref_logits = found, found.reference_logits()
            else:
                self.ready, self.ref_session, self.ref_logits = prepared.prepare_model(
                    inputs, self.example, self.reference, folder, key, self.bs, self.peaks, self.stages, self.say
                )
        self.fp32, self.size, self.parity = self.ready.fp32, self.ready.size, self.ready.parity
        self.calib_fp32 = self.ready.calibration_top1()
        self.fp32_acc = accuracy(self.ref_logits, inputs.heldout.labels)

    def _int8_within_drop(self, runner: Any, artifact: Path, calibration: Any) -> tuple[Any, Path, list[dict]]:
        """The runner's INT8 recipes in order until one keeps calibration top-1 within the allowed drop.

        Judged on the labelled calibration split against the FP32 export there (the held-out split only measures the
        result). The chosen one is the first within the drop, else the one that lost least; every attempt is recorded.
        """
        from evaluators.accuracy import accuracy, predict_stream
        from evaluators.runners.base import Int8Recipes

        def top1(run: Any, art: Path) -> float:
            session = run.load(art)
            return accuracy(predict_stream(partial(run.predict, session), calibration.batches(self.bs)),
                            calibration.labels).top1  # fmt: skip

        max_drop = int8_max_drop(self.settings)
        if self.calib_fp32 is None:
            self.calib_fp32 = top1(self.reference, self.fp32.path)
            self.stages.ran("calibration_fp32")
            self.ready.save_calibration_top1(self.calib_fp32)
        tried = [(runner, artifact, top1(runner, artifact))]
        self.stages.ran(f"calibration_{runner.name}")
        recipes = runner.recipes if isinstance(runner, Int8Recipes) else (getattr(runner, "recipe", "ptq"),)
        for recipe in recipes[1:]:
            if self.calib_fp32 - tried[-1][2] <= max_drop:
                break
            self.say(f"{runner.name}: INT8 lost {self.calib_fp32 - tried[-1][2]:.3f} top-1 (> {max_drop}): {recipe}")
            alt = runner.with_recipe(recipe, max_drop)
            art = alt.prepare(self.fp32.path, self.work / runner.name / recipe, calibration)
            tried.append((alt, art, top1(alt, art)))
            self.stages.ran(f"prepare_{runner.name}_{recipe}")
            self.stages.ran(f"calibration_{runner.name}_{recipe}")
        within = [i for i, t in enumerate(tried) if self.calib_fp32 - t[2] <= max_drop]
        pick = within[0] if within else max(range(len(tried)), key=lambda i: tried[i][2])
        attempts = [
            {"recipe": getattr(run, "recipe", "ptq"), "calibration_top1": t1, "calibration_top1_fp32": self.calib_fp32,
             "drop": self.calib_fp32 - t1, "max_drop": max_drop, "chosen": i == pick}
            for i, (run, _, t1) in enumerate(tried)
        ]  # fmt: skip
        chosen = tried[pick]
        return chosen[0], chosen[1], attempts

    def measure(self, r: str) -> Evaluation:
        from evaluators.accuracy import accuracy, predict_stream, write_accuracy_artifacts, write_predictions
        from evaluators.latency import LatencySettings, measure_batches
        from evaluators.runners import PeakMemory, artifact_files, fingerprint_id, get_runner, runner_host_id
        from evaluators.size import deployed_size_mb

        inputs, entry, held = self.inputs, self.entry, self.inputs.heldout
        runner = run_stage("runner", lambda: get_runner(r))  # available: checked before the model was prepared
        self.say(f"{r}: prepare")
        calibration = inputs.calibration()
        with self.peaks.stage(f"prepare_{r}"):
            artifact = run_stage("prepare", lambda: runner.prepare(self.fp32.path, self.work / r, calibration))
            self.stages.ran(f"prepare_{r}")
            attempts: list[dict[str, Any]] = []
            if runner.precision == "int8" and calibration is not None and len(calibration):
                runner, artifact, attempts = run_stage(
                    "prepare", lambda: self._int8_within_drop(runner, artifact, calibration)
                )
        if isinstance(runner, PeakMemory):
            runner.reset_peak_memory()
        with self.peaks.stage(f"accuracy_{r}"):
            rss0 = _rss_mb()
            if r == self.reference.name and artifact == self.fp32.path:  # the reference ran this artifact already
                session = self.ref_session
                if session is None:  # prepared by another job: its logits are reused, a session times the latency
                    session = run_stage("load", lambda: runner.load(artifact))
                logits = self.ref_logits
            else:
                session = run_stage("load", lambda: runner.load(artifact))
                self.say(f"{r}: accuracy on {len(held)} held-out images")
                logits = run_stage(
                    "accuracy", lambda: predict_stream(partial(runner.predict, session), held.batches(self.bs))
                )
                self.stages.ran(f"accuracy_{r}")
        acc = accuracy(logits, held.labels)
        out = self.work / r
        head_index = inputs.labels.indices if inputs.labels.keeps_pretrained_head else None
        acc_files, acc_extra = run_stage(
            "accuracy",
            partial(
                write_accuracy_artifacts,
                logits,
                held.labels,
                self.manifest.classes,
                out / "acc",
                f"{self.variant} {r}",
                head_index,
            ),
        )
        rels = [p.relative_to(self.manifest.root).as_posix() for p in held.paths]
        acc_files["predictions"] = write_predictions(
            logits, held.labels, rels, inputs.labels.head_names(), out / "predictions.csv"
        )
        acc_files["data"] = self._data_files(out / "data")
        if attempts:  # what was tried to keep INT8 within the allowed top-1 drop, and what each cost
            (out / "int8").mkdir(parents=True, exist_ok=True)
            (out / "int8" / "attempts.json").write_text(json.dumps(attempts, indent=2))
            acc_files["int8"] = out / "int8" / "attempts.json"
        self.say(f"{r}: latency")
        lat_settings = self.latency or LatencySettings()
        x_lat = self.example[: max(1, lat_settings.large_batch)]
        with self.peaks.stage(f"latency_{r}"):
            lat = run_stage(
                "latency",
                partial(
                    measure_batches,
                    partial(runner.predict, session),
                    runner.synchronize,
                    x_lat,
                    lat_settings,
                    self.settings.latency_lock,
                ),
            )
        self.stages.ran(f"latency_{r}")
        mem = {"memory_rss_mb": max(0.0, _rss_mb() - rss0)}
        if isinstance(runner, PeakMemory):
            mem["memory_gpu_peak_mb"] = runner.peak_memory_mb()
        deploy_files = artifact_files(artifact)
        fp = runner.fingerprint(batch_size=1, image_size=inputs.pre.input_size)
        metrics = {
            **acc.to_metrics(),
            **acc_extra,
            **lat,
            **self.size.to_metrics(),
            **self.parity.to_metrics(),
            **self.ready.backbone_params,
            "size_mb": deployed_size_mb(deploy_files),  # the runner's own files; the FP32 export is fp32_size_mb
            **mem,
            **self.peaks.to_metrics(),
            "top1_fp32": self.fp32_acc.top1,
            "top1_drop_vs_fp32": self.fp32_acc.top1 - acc.top1,
            "pull_seconds": self.ready.pull_seconds,  # where the model was prepared, once for all its runners
            "export_seconds": self.ready.export_seconds,
        }
        if attempts:
            metrics["int8_attempts"] = len(attempts)
            metrics["int8_calibration_drop"] = next(a["drop"] for a in attempts if a["chosen"])
        params = {
            "variant": self.variant,
            "architecture": entry.architecture,
            "family": entry.family.value,
            "runner": r,
            "precision": runner.precision,
            "image_size": inputs.pre.input_size,
            "image_size_override": self.profile.image_size or "none (the tag's own eval size)",
            "native_size": entry.input_size,
            "weights_source": self.weights,
            "profile": self.profile.name,
            "num_classes": len(self.manifest.classes),
            "head_outputs": inputs.labels.num_outputs,
            "label_map": inputs.labels.kind,
            **{f"preprocess_{k}": v for k, v in inputs.pre.to_dict().items()},
            **{f"train_{k}": v for k, v in self.ready.train_details.items()},
            "prepared": "reused" if self.reused else "prepared here",
        }
        if attempts:
            params["int8_recipe"] = next(a["recipe"] for a in attempts if a["chosen"])
            params["int8_max_top1_drop"] = attempts[0]["max_drop"]
        if entry.published is not None:
            params.update(
                published_params_m=entry.published.params_m,
                published_gmacs=entry.published.gmacs,
                published_top1=entry.published.top1,
                published_source=entry.published.source,
            )
        return Evaluation(
            variant=self.variant,
            family=entry.family.value,
            runner=r,
            precision=runner.precision,
            dataset=self.ds,
            key=self.keys[r],
            sweep=self.sweep,
            fingerprint=fp,
            fingerprint_id=fingerprint_id(fp),
            weights_digest=self.ready.weights_digest,
            weights_source=self.weights,
            artifact=artifact if artifact.suffix == ".onnx" else self.fp32.path,  # torch runners: the same weights
            input_example=self.example[:1],
            output_example=logits[:1],
            params=params,
            metrics=metrics,
            artifacts={**acc_files, **({} if artifact.suffix == ".onnx" else {"deploy": _folder(deploy_files, out)})},
            preprocess=inputs.pre.to_dict(),
            host=runner_host_id(r, fp),
        )

    def _data_files(self, out: Path) -> Path:
        """``data/``: the label map, the preprocessing and the quarantined files of the dataset."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "label_map.json").write_text(json.dumps(self.inputs.labels.to_json(), indent=1))
        (out / "preprocess.json").write_text(json.dumps(self.inputs.pre.to_dict(), indent=1))
        (out / "quarantined.json").write_text(json.dumps(self.manifest.quarantined(), indent=1, sort_keys=True))
        return out

    def gate_and_log(self, measured: dict[str, Evaluation]) -> None:
        """One results gate over the model's runners; a failure is recorded (with the GX result), nothing registered."""
        from evaluators.gates import ResultsGateConfig, gate_evaluations
        from registry.writes import log_evaluation

        stages = self.work / "stages.json"  # what this job ran, on each of its runs (summed over a model's jobs)
        stages.parent.mkdir(parents=True, exist_ok=True)
        stages.write_text(json.dumps(self.stages.to_json(self.variant, self.ready.key, self.reused), indent=1))
        try:
            if measured:
                self.say(f"results gate ({', '.join(measured)})")
            gated: dict[str, Any] = gate_evaluations(  # the head-free parameter counts are on the metrics already
                list(measured.values()),
                None,
                None,
                [self.work / r for r in measured],
                ResultsGateConfig(max_latency_cov=self.settings.gate_max_latency_cov),
            )
        except Exception as exc:  # the gate itself broke: each runner fails at the gate, recorded
            gated = dict.fromkeys(measured, exc)
        for r, ev in measured.items():
            try:
                gate = gated[r]
                if isinstance(gate, Exception):
                    raise StageError("gate", gate)
                ev.artifacts["gates"] = gate
                ev.artifacts["stages"] = stages
                self.say(f"{r}: log to MLflow")
                logged = run_stage("log", lambda: log_evaluation(self.settings, ev))  # noqa: B023
                self.outcomes[r] = Outcome(
                    self.variant, r, "ok", run_id=logged.run_id, model_uri=logged.model_uri, metrics=ev.metrics
                )
            except Exception as exc:
                self.outcomes[r] = self.fail(r, exc)
