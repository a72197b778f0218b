"""What a model is measured on: the preprocessing, the label map, the streamed splits and the weights source.

Shared by the pull task (train once, cache the weights) and the measuring tasks, in the DAG and the CLI alike.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from catalog import CatalogEntry, Profile
from evaluators.data import DatasetManifest
from evaluators.images import ImageSplit, Preprocess
from evaluators.labels import LabelMap, LabelMapError, explain_mismatch, folder_map, imagenet_map
from registry.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def preprocess_for(entry: CatalogEntry, image_size: int | None) -> Preprocess:
    """Timm's eval data config for the entry's pretrained tag, at its own eval resolution unless overridden."""
    return Preprocess.from_timm(entry.name, image_size)


def open_split(
    manifest: DatasetManifest, split: str, pre: Preprocess, labels: LabelMap, settings: Settings
) -> ImageSplit:
    """A split streamed from the tensor cache (written on first use, once per preprocessing config)."""
    sm = manifest.split(split)
    rels = sorted(sm.files)
    index = labels.index()
    cache = settings.cache_dir / "tensors" / f"{manifest.name}-{split}-{sm.digest[:16]}-{pre.key()}.f32"
    return ImageSplit(
        [manifest.root / r for r in rels], np.asarray([index[sm.label_of(r)] for r in rels], np.int64), pre, cache
    )


def split_for(manifest: DatasetManifest, split: str, pre: Preprocess, settings: Settings) -> ImageSplit:
    """A split scored against a head sized to its folders (benchmarks and tests on the bundled digits)."""
    return open_split(manifest, split, pre, folder_map(manifest.classes), settings)


def label_map_for(weights: str, entry: CatalogEntry, classes: tuple[str, ...], source: Any = None) -> LabelMap:
    """Which head output each class folder is scored against (see :mod:`evaluators.labels`).

    Trained sources (``finetune``, ``transfer``) and ``scratch`` get a head sized to the folders. ``timm-hub`` keeps the
    checkpoint's ImageNet head and maps the folders to it, or refuses: an untrained new head scores chance, differently
    on every run. ``file:`` weights keep their own head: sized to the folders, or ImageNet's with ImageNet folders.
    """
    from catalog.weights import TRAINED_SOURCES

    if weights in (*TRAINED_SOURCES, "scratch"):
        return folder_map(classes)
    imagenet = imagenet_map(classes)
    if weights == "timm-hub":
        import timm

        cfg = timm.get_pretrained_cfg(entry.name)
        head = getattr(cfg, "num_classes", None)
        if head != 1000:
            raise LabelMapError(
                f"{entry.name}: its pretrained head has {head} outputs, not ImageNet-1k's 1000; use --weights transfer"
            )
        if imagenet is None:
            raise LabelMapError(explain_mismatch(classes, entry.name))
        return imagenet
    head = source.head_size(entry) if source is not None else None
    if head == len(classes):
        return folder_map(classes)
    if head == 1000 and imagenet is not None:
        return imagenet
    raise LabelMapError(
        f"{entry.name}: the checkpoint's classifier has {head} outputs but the dataset has {len(classes)} classes "
        f"{list(classes[:8])}{' ...' if len(classes) > 8 else ''}"
        + ("" if head != 1000 else " that are not ImageNet classes")
        + "; give a checkpoint trained on these classes, or --weights transfer to train a new head"
    )


def load_limits(settings: Settings) -> Any:
    """``catalog.weights.LoadLimits`` from ``CNNSELECT_LOAD_TIMEOUT_S`` and ``CNNSELECT_LOAD_MEMORY_MB``."""
    from catalog.weights import LoadLimits

    return LoadLimits(timeout_s=settings.load_timeout_s, memory_mb=settings.load_memory_mb)


def weights_source(
    weights: str, profile: Profile, train: ImageSplit | None, settings: Settings, progress: Progress
) -> Any:
    """The source named by ``weights``; the trained ones read the streamed ``train`` split."""
    from catalog.weights import (
        SOURCES,
        FileSource,
        FinetuneSource,
        ScratchSource,
        TimmHubSource,
        transfer_recipe,
    )

    seed = settings.seed

    def said(e: int, loss: float) -> None:
        progress(f"epoch {e} loss {loss:.3f}")

    if weights in ("finetune", "transfer"):
        if train is None or len(train) == 0:
            raise ValueError(f"--weights {weights} trains on the dataset's 'train' split, which has no images")
        if weights == "transfer":
            return FinetuneSource(
                train,
                epochs=profile.epochs,
                seed=seed,
                init=TimmHubSource(),
                recipe=transfer_recipe(profile.epochs),
                progress=said,
                name="transfer",
            )
        return FinetuneSource(train, epochs=profile.epochs, seed=seed, progress=said)
    if weights == "timm-hub":
        return TimmHubSource()
    if weights == "scratch":
        return ScratchSource(seed, measured=True)
    if weights.startswith("file:"):
        return FileSource(weights[len("file:") :], limits=load_limits(settings))
    raise ValueError(f"unknown weights source {weights!r}; valid: {', '.join(SOURCES)} (file as 'file:<path or uri>')")


def save_weights(model: Any, path: Path) -> None:
    """Atomically write a state dict as safetensors (never a pickle)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


class Inputs:
    """Everything one model is measured on, resolved once: preprocessing, label map, splits, weights source."""

    def __init__(
        self,
        entry: CatalogEntry,
        manifest: DatasetManifest,
        profile: Profile,
        weights: str,
        settings: Settings,
        progress: Progress,
        cache: Path | None = None,
    ) -> None:
        from catalog.weights import TRAINED_SOURCES, FileSource

        self.entry, self.manifest, self.weights = entry, manifest, weights
        self.pre = preprocess_for(entry, profile.image_size)
        self.source: Any = None
        if cache is not None and cache.exists():  # trained before (the DAG's pull task, or an earlier sweep)
            self.source = FileSource(str(cache), limits=load_limits(settings))
        elif weights.startswith("file:"):
            self.source = weights_source(weights, profile, None, settings, progress)
        self.labels = label_map_for(weights, entry, manifest.classes, self.source)
        self.heldout = open_split(manifest, "heldout", self.pre, self.labels, settings)
        trains = weights in TRAINED_SOURCES and self.source is None
        self.train = open_split(manifest, "train", self.pre, self.labels, settings) if trains else None
        if self.source is None:
            self.source = weights_source(weights, profile, self.train, settings, progress)
        self._settings, self.cache = settings, cache

    def pull(self) -> Any:
        """The model with its weights (``catalog.weights.PulledModel``), written to the weights cache when trained anew.

        The one place weights are resolved: the DAG's pull task and every measurement call it; a source read from the
        cache (trained before) is not written back.
        """
        pulled = self.source.pull(self.entry, self.labels.num_outputs)
        if self.cache is not None and not self.cache.exists():
            save_weights(pulled.model, self.cache)
        return pulled

    def calibration(self) -> ImageSplit | None:
        if "calibration" not in self.manifest.splits:
            return None
        return open_split(self.manifest, "calibration", self.pre, self.labels, self._settings)
