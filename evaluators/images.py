"""Images to model input: decode as a photo viewer would, then timm's own eval transform, streamed in batches.

Decoding (:func:`open_rgb`) does what timm's reader (``img.convert("RGB")``) does, and more:

- EXIF orientation is applied (a phone photo taken upright is scored upright);
- 16-bit images (``I;16``, ``I``) are scaled to 8 bits instead of clipping to white;
- transparency (RGBA, LA, PA, palette with a transparent colour) is composited on white instead of dropping alpha
  (which shows whatever colour the transparent pixels happen to hold);
- CMYK, grayscale, bilevel and palette images become RGB.

Preprocessing is timm's: :class:`Preprocess` holds the data config that ``timm.data.resolve_data_config`` resolves
for the pretrained tag (as timm's ``validate.py`` does, test size included) and builds the transform with
``timm.data.create_transform``: resize the short side to ``size / crop_pct``, centre crop, interpolation, mean and std.
No resize is written by hand. The config travels with the model (MLflow param, tag and ``preprocess.json``).

:class:`ImageSplit` streams a split: each image is decoded and transformed once per preprocessing config into a
float32 file under the cache folder, then read back a batch at a time (plain reads, no memory map, so a reader's
memory is one batch, whatever the split's size).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

HEADER = 128  # bytes before the float32 rows of a cache file (a small JSON header, space-padded)


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message names it and says why."""


def open_rgb(path: str | Path | IO[bytes], label: str | None = None) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image (EXIF orientation applied, 16-bit scaled, transparency on white)."""
    path = Path(path) if isinstance(path, str) else path
    label = label or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as raw:
                raw.load()
                img = ImageOps.exif_transpose(raw) or raw
                return to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageDecodeError(f"cannot decode image {label}: {type(exc).__name__}: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; see the module docstring for the rules."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        top = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        img = Image.fromarray((np.clip(arr, 0, top) * 255 // top).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """timm's eval data config for one model: what ``create_transform`` is built from."""

    input_size: int  # square side of the model input
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float
    crop_mode: str = "center"

    @classmethod
    def from_timm(cls, timm_name: str, image_size: int | None = None, model: Any = None) -> Preprocess:
        """``resolve_data_config`` for the pretrained tag, test size preferred (as ``validate.py``); an override size.

        ``image_size`` replaces the resolution only; crop, interpolation, mean and std stay the tag's.
        """
        import timm
        from timm.data import resolve_data_config

        args: dict[str, Any] = {"input_size": (3, image_size, image_size)} if image_size else {}
        if model is not None:
            cfg = resolve_data_config(args, model=model, use_test_size=True)
        else:
            pretrained = timm.get_pretrained_cfg(timm_name)
            cfg = resolve_data_config(
                args, pretrained_cfg=pretrained.to_dict() if pretrained is not None else {}, use_test_size=True
            )
        return cls(
            input_size=int(cfg["input_size"][-1]),
            interpolation=str(cfg["interpolation"]),
            mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
            crop_pct=float(cfg["crop_pct"]),
            crop_mode=str(cfg.get("crop_mode", "center")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            input_size=int(d["input_size"]),
            interpolation=str(d["interpolation"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            crop_pct=float(d["crop_pct"]),
            crop_mode=str(d.get("crop_mode", "center")),
        )

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def transform(self) -> Any:
        """Timm's eval transform for this config (a torchvision ``Compose``)."""
        from timm.data import create_transform

        return create_transform(
            input_size=(3, self.input_size, self.input_size),
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
        )

    def __call__(self, images: Sequence[Image.Image | str | Path] | Image.Image | str | Path) -> np.ndarray:
        """Photos (PIL images or paths) to the float32 NCHW batch a measured artifact saw."""
        items = [images] if isinstance(images, Image.Image | str | Path) else list(images)
        tf = self.transform()
        rows = [tf(to_rgb(i) if isinstance(i, Image.Image) else open_rgb(i)).numpy() for i in items]
        return np.ascontiguousarray(np.stack(rows).astype(np.float32, copy=False))


def batch_size_for(input_size: int, budget_pixels: int = 16 * 224 * 224) -> int:
    """Images per inference batch: about as many pixels as 16 images at 224 px (2 at 600 px), 1 to 64."""
    return max(1, min(64, budget_pixels // max(1, input_size * input_size)))


class ImageSplit:
    """One split, preprocessed once per config into a float32 file, streamed back in batches.

    ``paths`` are the images in a fixed order and ``labels`` their indices into the model's head. The cache file is
    named by ``key`` (the split's digest, the preprocessing and the label map), written atomically and reused by every
    later model with the same preprocessing, in this process or another.
    """

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, pre: Preprocess, cache: Path) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} images for {len(labels)} labels")
        self.paths, self.labels, self.pre, self.cache = list(paths), np.asarray(labels, np.int64), pre, cache
        self.row_shape = (3, pre.input_size, pre.input_size)
        self._row_bytes = 4 * int(np.prod(self.row_shape))

    def __len__(self) -> int:
        return len(self.paths)

    def _materialize(self) -> Path:
        if self.cache.exists() and self.cache.stat().st_size == HEADER + len(self) * self._row_bytes:
            return self.cache
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_name(f"{self.cache.name}.{uuid.uuid4().hex[:8]}.tmp")
        tf = self.pre.transform()
        header = json.dumps({"rows": len(self), "shape": self.row_shape, "pre": self.pre.to_dict()}).encode()
        with open(tmp, "wb") as f:
            f.write(header.ljust(HEADER, b" ")[:HEADER])
            for p in self.paths:
                row = tf(open_rgb(p)).numpy().astype(np.float32, copy=False)
                f.write(np.ascontiguousarray(row).tobytes())
        os.replace(tmp, self.cache)
        return self.cache

    def rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The preprocessed images at ``indices`` (any order), float32 NCHW."""
        path = self._materialize()
        out = np.empty((len(indices), *self.row_shape), dtype=np.float32)
        with open(path, "rb") as f:
            for j, i in enumerate(indices):
                f.seek(HEADER + int(i) * self._row_bytes)
                f.readinto(memoryview(out[j]).cast("B"))  # type: ignore[arg-type]
        return out

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Every image in order, ``batch_size`` at a time."""
        path = self._materialize()
        with open(path, "rb") as f:
            f.seek(HEADER)
            for start in range(0, len(self), batch_size):
                n = min(batch_size, len(self) - start)
                out = np.empty((n, *self.row_shape), dtype=np.float32)
                f.readinto(memoryview(out).cast("B"))  # type: ignore[arg-type]
                yield out

    def first(self, n: int) -> np.ndarray:
        return self.rows(range(min(n, len(self))))

    def array(self) -> np.ndarray:
        """Every image at once: for small splits only (tests, benchmarks); a sweep streams with :meth:`batches`."""
        return self.rows(range(len(self)))
