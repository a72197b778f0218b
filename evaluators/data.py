"""ImageFolder datasets with content-hash manifests; the bundled digits are the default.

Layout: ``<root>/<split>/<class>/<image>`` with splits ``train``, ``calibration`` and ``heldout``. The manifest
(``<root>/manifest.json``) holds the sha256 of every image and a digest per split, so a measurement can name exactly
what it was measured on.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "heldout")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
MANIFEST = "manifest.json"


class DatasetError(ValueError):
    """A dataset that cannot be used at all (no classes, missing split, ...)."""


@dataclass(frozen=True)
class SplitManifest:
    split: str
    digest: str
    files: dict[str, str]  # relative path -> sha256
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> reason

    @property
    def count(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class DatasetManifest:
    name: str
    root: Path
    classes: tuple[str, ...]
    splits: dict[str, SplitManifest]

    @property
    def digest(self) -> str:
        """One digest for the whole dataset: its splits' digests, in order."""
        h = hashlib.sha256()
        for name in sorted(self.splits):
            h.update(f"{name}:{self.splits[name].digest}\n".encode())
        return h.hexdigest()

    def split(self, name: str) -> SplitManifest:
        if name not in self.splits:
            raise DatasetError(f"dataset {self.name!r} at {self.root} has no split {name!r}; has {sorted(self.splits)}")
        return self.splits[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "digest": self.digest,
            "splits": {
                s.split: {"digest": s.digest, "count": s.count, "files": s.files, "skipped": s.skipped}
                for s in self.splits.values()
            },
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split_digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel]}\n".encode())
    return h.hexdigest()


def decode_image(data: bytes, source: str) -> Image.Image:
    """Decode and fully load an image; truncated, corrupt or decompression-bomb files raise ``DatasetError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except Exception as exc:  # PIL raises many types for broken files
        raise DatasetError(f"cannot decode image {source}: {type(exc).__name__}: {exc}") from exc
    return img


def scan(root: str | Path, name: str | None = None) -> DatasetManifest:
    """Hash every image of an ImageFolder tree; unreadable images are listed under ``skipped`` with the reason."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    splits: dict[str, SplitManifest] = {}
    classes: set[str] = set()
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        if not class_dirs:
            raise DatasetError(f"split folder {split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
        files: dict[str, str] = {}
        skipped: dict[str, str] = {}
        for cdir in class_dirs:
            classes.add(cdir.name)
            for path in sorted(cdir.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                rel = path.relative_to(root).as_posix()
                data = path.read_bytes()
                try:
                    decode_image(data, rel)
                except DatasetError as exc:
                    log.warning("skipping %s", exc)
                    skipped[rel] = str(exc)
                    continue
                files[rel] = _sha256(data)
        splits[split] = SplitManifest(split, _split_digest(files), files, skipped)
    if not splits:
        raise DatasetError(f"{root} has none of the split folders {list(SPLITS)}")
    if not classes:
        raise DatasetError(f"{root} has no class folders")
    return DatasetManifest(name or root.name, root, tuple(sorted(classes)), splits)


def write_manifest(manifest: DatasetManifest) -> Path:
    path = manifest.root / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))
    return path


def load_manifest(root: str | Path) -> DatasetManifest:
    """Read ``manifest.json`` if present, else scan the tree and write one."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        manifest = scan(root)
        write_manifest(manifest)
        return manifest
    raw = json.loads(path.read_text())
    splits = {
        s: SplitManifest(s, v["digest"], dict(v["files"]), dict(v.get("skipped", {}))) for s, v in raw["splits"].items()
    }
    return DatasetManifest(raw["name"], root, tuple(raw["classes"]), splits)


def write_digits(
    root: str | Path, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)
) -> DatasetManifest:
    """Write scikit-learn's bundled digits (1,797 real 8x8 scans) as a stratified, seeded ImageFolder tree.

    Idempotent: an existing tree with a manifest is returned as is. Byte-identical scans are kept once, so no image
    can land in two splits.
    """
    root = Path(root)
    if (root / MANIFEST).exists():
        return load_manifest(root)
    from sklearn.datasets import load_digits  # seconds to import: only when the tree is written

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    targets = digits.target
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    tmp = root.with_name(root.name + ".partial")
    for cls in range(10):
        idx = np.flatnonzero(targets == cls)
        rng.shuffle(idx)
        encoded = []
        for i in idx:
            buf = io.BytesIO()
            Image.fromarray(images[i], mode="L").save(buf, format="PNG", optimize=False)
            data = buf.getvalue()
            digest = _sha256(data)
            if digest in seen:
                continue
            seen.add(digest)
            encoded.append((int(i), data))
        n = len(encoded)
        n_train = int(round(fractions[0] * n))
        n_cal = int(round(fractions[1] * n))
        bounds = {"train": (0, n_train), "calibration": (n_train, n_train + n_cal), "heldout": (n_train + n_cal, n)}
        for split, (lo, hi) in bounds.items():
            out = tmp / split / str(cls)
            out.mkdir(parents=True, exist_ok=True)
            for index, data in encoded[lo:hi]:
                (out / f"digit_{index:04d}.png").write_bytes(data)
    tmp.rename(root)
    manifest = scan(root, name="digits")
    write_manifest(manifest)
    return manifest


@dataclass(frozen=True)
class Preprocess:
    """How images become model input; comes from timm's data config for the entry."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def key(self) -> str:
        return _sha256(repr(self).encode())[:16]


_INTERP = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def to_array(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """RGB, resized to a square, scaled to [0,1], normalized; CHW float32."""
    img = img.convert("RGB").resize(
        (pre.image_size, pre.image_size), _INTERP.get(pre.interpolation, Image.Resampling.BICUBIC)
    )
    arr: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_split(
    manifest: DatasetManifest, split: str, pre: Preprocess, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and preprocess a split once per preprocessing config; later calls read the cached tensors.

    Returns ``(x, y)``: float32 NCHW and int64 class indices (into ``manifest.classes``).
    """
    sm = manifest.split(split)
    cache: Path | None = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{manifest.name}-{split}-{sm.digest[:16]}-{pre.key()}.npz"
        if cache.exists():
            with np.load(cache) as z:
                return z["x"], z["y"]
    class_index = {c: i for i, c in enumerate(manifest.classes)}
    xs, ys = [], []
    for rel, sha in sorted(sm.files.items()):
        data = (manifest.root / rel).read_bytes()
        if _sha256(data) != sha:
            raise DatasetError(f"{rel} changed since the manifest was written (sha256 mismatch): rescan the dataset")
        xs.append(to_array(decode_image(data, rel), pre))
        ys.append(class_index[Path(rel).parent.name])
    if not xs:
        raise DatasetError(f"split {split!r} of {manifest.name!r} has no readable images")
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(cache)
    return x, y
