"""Where a model's weights come from: one small interface, three sources.

- ``timm-hub``: pretrained weights through timm and huggingface_hub (honours ``HF_HOME``/``HF_HUB_CACHE`` and
  ``HF_HUB_OFFLINE``);
- ``file``: a local checkpoint or an MLflow artifact URI (``runs:/``, ``models:/``); safetensors preferred, other
  checkpoints only through ``torch.load(weights_only=True)``;
- ``finetune``: train the architecture from scratch on the dataset's ``train`` split with a head sized to its classes;
- ``transfer``: start from the pretrained checkpoint, a new head sized to the classes, fine-tuned on ``train``
  (:func:`transfer_recipe`: the head first, then the whole net at a lower rate), seeded;
- ``scratch``: seeded random weights, untrained (benchmarks of speed and size only).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from catalog.entries import CatalogEntry

log = logging.getLogger(__name__)

SourceName = Literal["timm-hub", "file", "finetune", "transfer", "scratch"]
SOURCES: tuple[str, ...] = ("timm-hub", "file", "finetune", "transfer", "scratch")
TRAINED_SOURCES: tuple[str, ...] = ("finetune", "transfer")  # sources that train a head for the dataset's classes


class WeightsError(RuntimeError):
    """Weights that cannot be pulled or loaded; the message names the model and the source."""


@dataclass
class PulledModel:
    entry: CatalogEntry
    model: torch.nn.Module
    num_classes: int
    source: str
    weights_digest: str  # what the model is fed is evaluators.images.Preprocess: declared there once
    details: dict[str, Any] = field(default_factory=dict)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes), independent of how it was serialized."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def create_model(entry: CatalogEntry, num_classes: int, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(entry.name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown models
        raise WeightsError(f"timm cannot create {entry.name!r}: {exc}") from exc


def _finish(entry: CatalogEntry, model: torch.nn.Module, num_classes: int, source: str, **details: Any) -> PulledModel:
    model.eval()
    return PulledModel(
        entry=entry,
        model=model,
        num_classes=num_classes,
        source=source,
        weights_digest=weights_digest(model),
        details=details,
    )


class WeightsSource(Protocol):
    name: str

    def pull(self, entry: CatalogEntry, num_classes: int) -> PulledModel: ...


@dataclass
class TimmHubSource:
    """Pretrained weights from the hub through timm.

    With ``num_classes`` equal to the checkpoint's (1000 for ImageNet tags) the checkpoint's head is kept; another size
    gets a new, seeded head (what :class:`FinetuneSource` trains for ``transfer``). Scoring an untrained new head is
    refused upstream (``evaluators.labels``).
    """

    name: str = "timm-hub"

    def pull(self, entry: CatalogEntry, num_classes: int) -> PulledModel:
        try:
            model = create_model(entry, num_classes, pretrained=True)
        except WeightsError:
            raise
        except Exception as exc:  # network off and not cached, missing file, ...
            raise WeightsError(f"cannot pull pretrained weights for {entry.name!r} from the hub: {exc}") from exc
        return _finish(entry, model, num_classes, self.name)


@dataclass
class ScratchSource:
    """Randomly initialised weights (seeded): the starting point of ``finetune`` when no hub is reachable.

    ``measured``: these weights are the ones measured (``--weights scratch``), not a start for training. Then no norm
    layer's scale is left at zero (:func:`revive_zero_norms`).
    """

    seed: int = 0
    name: str = "scratch"
    measured: bool = False

    def pull(self, entry: CatalogEntry, num_classes: int) -> PulledModel:
        torch.manual_seed(self.seed)
        model = create_model(entry, num_classes)
        revived = revive_zero_norms(model) if self.measured else 0
        return _finish(entry, model, num_classes, self.name, seed=self.seed, revived_norms=revived)


def revive_zero_norms(model: torch.nn.Module) -> int:
    """Set every all-zero norm scale to one; how many there were.

    timm zero-initialises the last norm of each residual block (ResNet's ``zero_init_last``), a training trick. In
    random weights that are measured as they are, it makes every such branch a constant zero. LiteRT's converter then
    folds those branches away, so a scratch ResNet-50 would time as a net a fraction of its size (8 ms where ORT runs
    the real one in 45). Trained and pretrained weights never have such zeros, so only measured scratch weights are
    changed.
    """
    count = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            is_norm = isinstance(module, torch.nn.modules.batchnorm._NormBase | torch.nn.GroupNorm | torch.nn.LayerNorm)
            if is_norm and isinstance(weight, torch.Tensor) and weight.numel() and not weight.any():
                weight.fill_(1.0)
                count += 1
    return count


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without ever unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"refusing to load {path}: not a plain tensor checkpoint ({exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return obj


@dataclass(frozen=True)
class LoadLimits:
    """Limits of the child process that parses a checkpoint from outside: wall time and address space.

    cnnselect passes ``Settings.load_timeout_s`` and ``Settings.load_memory_mb`` (``CNNSELECT_LOAD_TIMEOUT_S``,
    ``CNNSELECT_LOAD_MEMORY_MB``), whose defaults these are.
    """

    timeout_s: float = 300.0
    memory_mb: int = 0  # 0: 4 GiB (torch's own) + 4x the file

    def address_space(self, file_bytes: int) -> int:
        if self.memory_mb > 0:
            return self.memory_mb * 1024 * 1024
        return 4 * 1024**3 + 4 * file_bytes


_SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|_KEY$|^AWS_|^AZURE_|^GOOGLE_|^AIRFLOW_CONN_", re.IGNORECASE)


def _child_env() -> dict[str, str]:
    """The parent's environment without secrets; ``PYTHONPATH`` so the child imports this package."""
    env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _convert_main() -> None:
    """Child process: parse the checkpoint (safetensors, or ``torch.load(weights_only=True)``), write safetensors."""
    from safetensors.torch import save_file

    src, dst = sys.argv[1], sys.argv[2]
    state = read_state_dict(src)
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, dst)


def read_state_dict_isolated(path: str | Path, limits: LoadLimits | None = None) -> dict[str, torch.Tensor]:
    """Parse an outside checkpoint in a child process with time and memory limits; only safetensors come back.

    The parent never unpickles anything: the child converts the checkpoint to safetensors, which the parent reads.
    """
    import resource

    limits = limits or LoadLimits()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    cap = limits.address_space(path.stat().st_size)

    def confine() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryDirectory(prefix="cnnselect-load-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        cmd = [sys.executable, "-c", "from catalog.weights import _convert_main; _convert_main()", str(path), str(out)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=limits.timeout_s, preexec_fn=confine, env=_child_env()
            )
        except subprocess.TimeoutExpired:
            raise WeightsError(
                f"refusing {path}: loading took longer than {limits.timeout_s:g} s (CNNSELECT_LOAD_TIMEOUT_S)"
            ) from None
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            memory = any(t in proc.stderr for t in ("MemoryError", "cannot allocate", "failed to map")) or (
                proc.returncode == -9
            )
            hint = f" (memory limit {cap / 2**20:.0f} MiB, CNNSELECT_LOAD_MEMORY_MB)" if memory else ""
            raise WeightsError(f"refusing to load {path}{hint}: {tail[0][:500]}")
        from safetensors.torch import load_file

        return load_file(str(out))


@dataclass
class FileSource:
    """A local checkpoint, or an MLflow artifact URI that is downloaded first; ``.pt``/``.pth`` parsed in a child."""

    uri: str
    name: str = "file"
    limits: LoadLimits = field(default_factory=LoadLimits)

    def local_path(self) -> Path:
        if self.uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
            import mlflow.artifacts

            return Path(mlflow.artifacts.download_artifacts(artifact_uri=self.uri))
        return Path(self.uri)

    def __post_init__(self) -> None:
        self._state: tuple[Path, dict[str, torch.Tensor]] | None = None

    def state(self) -> tuple[Path, dict[str, torch.Tensor]]:
        """The checkpoint's path and tensors, read once (pickle-based ones in a confined child)."""
        if self._state is None:
            path = self.local_path()
            if path.is_dir():
                found = sorted(path.rglob("*.safetensors")) or sorted(path.rglob("*.pt")) + sorted(path.rglob("*.pth"))
                if not found:
                    raise WeightsError(f"no .safetensors/.pt checkpoint under {path}")
                path = found[0]
            # safetensors cannot run code and is read here; pickle-based checkpoints are parsed in a confined child
            loaded = (
                read_state_dict(path) if path.suffix == ".safetensors" else read_state_dict_isolated(path, self.limits)
            )
            self._state = (path, loaded)
        return self._state

    def head_size(self, entry: CatalogEntry) -> int | None:
        """Outputs of the checkpoint's classifier (timm's ``pretrained_cfg['classifier']``), if it can be told."""
        import timm

        cfg = timm.get_pretrained_cfg(entry.name)
        classifier = cfg.classifier if cfg is not None else None
        key = f"{classifier[0] if isinstance(classifier, list | tuple) else classifier}.weight"
        tensor = self.state()[1].get(key)
        return int(tensor.shape[0]) if tensor is not None else None

    def pull(self, entry: CatalogEntry, num_classes: int) -> PulledModel:
        path, state = self.state()
        model = create_model(entry, num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{path} does not fit {entry.name!r} with {num_classes} classes: {exc}") from exc
        return _finish(entry, model, num_classes, self.name, path=str(path))


class TrainingData(Protocol):
    """A split to train on, streamed: ``rows(indices)`` gives preprocessed images (``evaluators.images.ImageSplit``)."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def rows(self, indices: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainStage:
    """A phase of a training recipe: ``epochs`` at peak ``lr`` (one-cycle), training the ``head`` only or ``all``."""

    epochs: int
    lr: float
    train: Literal["head", "all"] = "all"


def scratch_recipe(epochs: int) -> tuple[TrainStage, ...]:
    """From random weights: the whole net, one stage."""
    return (TrainStage(epochs, 1e-2, "all"),)


def transfer_recipe(epochs: int) -> tuple[TrainStage, ...]:
    """From a pretrained backbone: the new head alone for a third of the epochs, then all of it at a 10x lower lr."""
    head = max(1, epochs // 3)
    return (TrainStage(head, 3e-3, "head"), TrainStage(max(1, epochs - head), 3e-4, "all"))


@dataclass
class FinetuneSource:
    """Train on the ``train`` split, starting from ``init`` (scratch by default), stage by stage (``recipe``).

    Batches are read from the streamed split (one batch in memory), in a seeded order; the eval transform is used (no
    augmentation), so a rerun with the same seed gives the same weights.
    """

    data: TrainingData
    epochs: int = 3
    batch_size: int = 64
    seed: int = 0
    init: WeightsSource | None = None
    recipe: tuple[TrainStage, ...] | None = None  # default: scratch_recipe(epochs)
    progress: Callable[[int, float], None] | None = None  # called with (epoch, loss)
    name: str = "finetune"

    def pull(self, entry: CatalogEntry, num_classes: int) -> PulledModel:
        torch.manual_seed(self.seed)  # the new head's initialisation
        start = (self.init or ScratchSource(self.seed)).pull(entry, num_classes)
        model = start.model
        gen = torch.Generator().manual_seed(self.seed)
        labels = torch.from_numpy(np.asarray(self.data.labels, dtype=np.int64))
        n = len(self.data)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        t0 = time.perf_counter()
        loss_value, done = float("nan"), 0
        recipe = self.recipe or scratch_recipe(self.epochs)
        for stage in recipe:
            classifier: torch.nn.Module = model.get_classifier()  # type: ignore[assignment,operator]
            head = set(classifier.parameters()) if stage.train == "head" else None
            params = [p for p in model.parameters() if head is None or p in head]
            for p in model.parameters():
                p.requires_grad_(head is None or p in head)
            opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.05)
            steps = max(1, stage.epochs * ((n + self.batch_size - 1) // self.batch_size))
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=stage.lr, total_steps=steps, pct_start=0.15)
            for _ in range(stage.epochs):
                model.train()
                if head is not None:  # a linear probe: the frozen backbone's BatchNorm statistics stay as they are
                    model.eval()
                    classifier.train()
                perm = torch.randperm(n, generator=gen)
                total, count = 0.0, 0
                for i in range(0, n, self.batch_size):
                    idx = perm[i : i + self.batch_size]
                    if len(idx) < 2:  # BatchNorm cannot train on a single sample
                        continue
                    x = torch.from_numpy(self.data.rows(idx.numpy()))
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x), labels[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += loss.item() * len(idx)
                    count += len(idx)
                done += 1
                loss_value = total / max(count, 1)
                if not np.isfinite(loss_value):
                    raise WeightsError(f"fine-tuning {entry.name!r} diverged at epoch {done} (loss {loss_value})")
                log.info("%s epoch %d (%s) loss %.4f", entry.name, done, stage.train, loss_value)
                if self.progress:
                    self.progress(done, loss_value)
        for p in model.parameters():
            p.requires_grad_(True)
        return _finish(
            entry,
            model,
            num_classes,
            self.name,
            init=start.source,
            recipe=";".join(f"{s.train}:{s.epochs}ep@{s.lr:g}" for s in recipe),
            epochs=sum(s.epochs for s in recipe),
            seed=self.seed,
            train_loss=loss_value,
            train_seconds=time.perf_counter() - t0,
            train_images=n,
        )
