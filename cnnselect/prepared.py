"""A model prepared once for all its runners: the FP32 export, the torch artifact, size, the FP32 reference, parity.

Kept on disk under ``Settings.cache_dir / "prepared"`` (in docker-compose, the volume every worker mounts), in a
folder named by the model's preparation key (:func:`cnnselect.pipeline.preparation_key`), so the task measuring
other runners of the same model, on another queue or in another process, reuses it instead of pulling, exporting
and running the reference again. Written into a temporary folder beside it and renamed into place, its manifest
(``prepared.json``) last; on reuse every file the manifest lists is checked (present, the size written), and an
incomplete or unreadable folder is logged, removed and prepared again. Two workers preparing the same model at once
take turns on a lock file, so the second finds the first's. The held-out reference logits are memory-mapped back,
never read whole.

What preparing runs is :func:`prepare_model`; each of its stages counts itself (:class:`cnnselect.stages.StageCounts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnselect.stages import StageCounts, run_stage
from evaluators.export import OnnxArtifact, ParityResult
from evaluators.size import SizeResult

log = logging.getLogger(__name__)

PREPARED_VERSION = 1  # bump when what a prepared folder holds changes: old folders are then prepared again
MANIFEST = "prepared.json"
LOGITS = "reference_logits.npy"
CALIBRATION = "calibration_fp32.json"  # the FP32 export's top-1 on the calibration split, written when first needed
FP32 = "fp32"
# what the export and the FP32 reference depend on beyond the model, its weights recipe and the data
SOFTWARE = ("torch", "timm", "onnx", "onnxruntime", "onnxscript")


def software_id() -> str:
    """The versions the export and the reference depend on: a new torch or onnxruntime prepares anew."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in SOFTWARE:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """What every runner of a model reuses; ``folder`` holds ``fp32/`` (the ONNX export and the torch artifact)."""

    key: str
    folder: Path
    size: SizeResult
    parity: ParityResult
    weights_digest: str
    train_details: dict[str, Any]
    backbone_params: dict[str, float]  # evaluators.gates.comparable_params, counted on the model when prepared
    heldout: int  # rows of the reference logits: the held-out split's images
    pull_seconds: float
    export_seconds: float
    stages: dict[str, int] = field(default_factory=dict)  # what preparing it ran, where it was prepared

    @property
    def fp32(self) -> OnnxArtifact:
        return OnnxArtifact(self.folder / FP32 / "model.onnx")

    def reference_logits(self) -> np.ndarray:
        return np.load(self.folder / LOGITS, mmap_mode="r")

    def calibration_top1(self) -> float | None:
        try:
            return float(json.loads((self.folder / CALIBRATION).read_text())["top1"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_calibration_top1(self, top1: float) -> None:
        """Written beside the rest once first computed, atomically; a folder without it is still complete."""
        tmp = self.folder / f".{CALIBRATION}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps({"top1": top1}))
            tmp.replace(self.folder / CALIBRATION)
        except OSError as exc:  # a read-only or vanished cache costs a recomputation later, nothing else
            log.warning("could not keep the FP32 calibration top-1 in %s: %s", self.folder, exc)
            tmp.unlink(missing_ok=True)

    def _meta(self) -> dict[str, Any]:
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, CALIBRATION))
        return {
            "version": PREPARED_VERSION,
            "key": self.key,
            "size": asdict(self.size),
            "parity": asdict(self.parity),
            "weights_digest": self.weights_digest,
            "train_details": self.train_details,
            "backbone_params": self.backbone_params,
            "heldout": self.heldout,
            "pull_seconds": self.pull_seconds,
            "export_seconds": self.export_seconds,
            "stages": self.stages,
            "files": {p.relative_to(self.folder).as_posix(): p.stat().st_size for p in files},
        }


def _plain(obj: Any) -> Any:
    """The numpy scalars (a parity check's ``np.bool_``, a count's ``np.int64``) as the Python values they hold."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def prepared_dir(cache_dir: Path, variant: str, key: str) -> Path:
    return cache_dir / "prepared" / f"{variant}-{key}"


STALE_S = 24 * 3600  # a temporary folder untouched this long was left by a killed preparation


def temp_dir(folder: Path) -> Path:
    """An empty folder beside ``folder`` (the same file system, so the final rename is atomic).

    What killed preparations of ``folder`` left beside it a day or more ago is removed first.
    """
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_S:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    return tmp


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    """One preparation of ``folder`` at a time across processes (``flock``; where it is unsupported, none)."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as exc:  # some network file systems: two workers may then both prepare, one rename wins
            log.debug("no lock on %s: %s", f.name, exc)
        yield


def load(folder: Path, key: str, heldout: int) -> Prepared | None:
    """The prepared model in ``folder``, checked complete; None when absent or (with a warning) when broken."""
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / MANIFEST).read_text())
        problem = _problem(folder, meta, key, heldout)
        if problem is None:
            found = Prepared(
                key=meta["key"],
                folder=folder,
                size=SizeResult(**meta["size"]),
                parity=ParityResult(**meta["parity"]),
                weights_digest=meta["weights_digest"],
                train_details=meta["train_details"],
                backbone_params=meta["backbone_params"],
                heldout=meta["heldout"],
                pull_seconds=meta["pull_seconds"],
                export_seconds=meta["export_seconds"],
                stages=meta["stages"],
            )
            if found.reference_logits().shape[0] == heldout:  # the .npy header parses and has the rows
                return found
            problem = "the reference logits do not cover the held-out split"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("prepared model at %s is unusable (%s): preparing it again", folder, problem)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _problem(folder: Path, meta: dict[str, Any], key: str, heldout: int) -> str | None:
    if meta.get("version") != PREPARED_VERSION or meta.get("key") != key:
        return f"written as version {meta.get('version')} for key {meta.get('key')}"
    if meta.get("heldout") != heldout:
        return f"reference over {meta.get('heldout')} held-out images, the split has {heldout}"
    files = meta.get("files") or {}
    if "fp32/model.onnx" not in files or LOGITS not in files:
        return "the manifest lists no export or no reference"
    for rel, size in files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != size:
            return f"{rel} is missing or not the {size} bytes written"
    return None


def commit(prepared: Prepared, final: Path) -> Prepared:
    """Write the manifest into ``prepared.folder`` (a :func:`temp_dir`) and rename it to ``final``.

    When another process got there first, its (checked) folder is used and this one removed.
    """
    tmp = prepared.folder
    (tmp / MANIFEST).write_text(json.dumps(prepared._meta(), indent=1, sort_keys=True, default=_plain))
    try:
        os.rename(tmp, final)
    except OSError:  # ``final`` exists: a concurrent preparation without a lock
        other = load(final, prepared.key, prepared.heldout)
        if other is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return other
        os.rename(tmp, final)
    prepared.folder = final
    return prepared


def prepare_model(
    inputs: Any,
    example: np.ndarray,
    reference: Any,
    folder: Path,
    key: str,
    batch_size: int,
    peaks: Any,
    stages: StageCounts,
    say: Callable[[str], None],
) -> tuple[Prepared, Any, np.ndarray]:
    """Pull, export (ONNX and the torch artifact), count, run the FP32 reference: into a temporary folder, kept.

    ``inputs`` is a ``cnnselect.inputs.Inputs``, ``reference`` the FP32 reference runner, ``peaks`` the job's
    ``evaluators.memory.StagePeaks``. Returns the prepared model (in ``folder``), the reference's session (for the
    reference runner's own latency) and its held-out logits. A failure raises ``StageError`` naming the stage.
    """
    from functools import partial

    from evaluators.accuracy import predict_stream
    from evaluators.export import check_parity, export_onnx
    from evaluators.gates import comparable_params
    from evaluators.runners.torch_cpu import save_torch_artifact
    from evaluators.size import measure_size

    entry = inputs.entry
    tmp = temp_dir(folder)
    try:
        say(f"pull ({inputs.weights})")
        t0 = time.perf_counter()
        with peaks.stage("pull"):
            pulled = run_stage("pull", inputs.pull)
        stages.ran("pull")
        pull_s = time.perf_counter() - t0
        say(f"export ONNX at {inputs.pre.input_size} px")
        t0 = time.perf_counter()
        with peaks.stage("export"):
            fp32 = run_stage("export", lambda: export_onnx(pulled.model, example, tmp / FP32))
            # the torch runners deploy the weights, not the graph: kept for whichever job measures them
            run_stage(
                "export",
                lambda: save_torch_artifact(pulled.model, entry.name, inputs.labels.num_outputs, fp32.path.parent),
            )
        stages.ran("export")
        export_s = time.perf_counter() - t0
        with peaks.stage("size"):
            size = run_stage(
                "size", lambda: measure_size(pulled.model, inputs.pre.input_size, entry.input_size, fp32.bytes)
            )
        stages.ran("size")
        say(f"FP32 reference on {len(inputs.heldout)} held-out images")
        with peaks.stage("reference"):
            session = run_stage("parity", lambda: reference.load(fp32.path))
            logits = run_stage(
                "parity",
                lambda: predict_stream(partial(reference.predict, session), inputs.heldout.batches(batch_size)),
            )
            n = min(len(example), 32)
            parity = check_parity(pulled.model, logits[:n], example[:n])
        stages.ran("reference")
        np.save(tmp / LOGITS, np.ascontiguousarray(logits))
        published = entry.published.params_m if entry.published else None
        ready = Prepared(
            key=key,
            folder=tmp,
            size=size,
            parity=parity,
            weights_digest=pulled.weights_digest,
            train_details=pulled.details,
            backbone_params=comparable_params(pulled.model, published),
            heldout=len(inputs.heldout),
            pull_seconds=pull_s,
            export_seconds=export_s,
            stages=dict(stages.counts),
        )
        return run_stage("export", lambda: commit(ready, folder)), session, logits
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when committed
