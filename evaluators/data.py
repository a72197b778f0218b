"""ImageFolder datasets with content-hash manifests kept outside the data; the bundled digits are the default.

Layout: ``<root>/<split>/<class>/.../<image>`` with splits ``train``, ``calibration`` and ``heldout``. Images in
folders nested inside a class belong to that class (the rule of torchvision's ``ImageFolder``, which walks each class
folder recursively); the summary lists how many were found that way.

The manifest holds the sha256, size, modification time and decoded size of every image, and a digest per split, so a
measurement can name exactly what it was measured on. It is kept in an index folder of cnnselect's home, never in the
dataset (which may be read-only), and checked cheaply at every sweep: only files whose size or mtime changed are
read again; an added, removed or changed file gives a new digest, so what was measured on the old data is measured
again.

A file that is not a usable image (corrupt, truncated, empty, a decompression bomb, another file type, smaller than
``MIN_SIDE`` pixels, a byte-identical copy of an image already in the split) is *quarantined*: listed with its path and
the reason, left out of every split, and never a reason to stop the sweep on its own. Hidden files (``.DS_Store``) are
ignored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluators.images import ImageDecodeError, open_rgb

log = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "heldout")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}
MIN_SIDE = 8  # pixels: smaller images are quarantined
MANIFEST_VERSION = 2


class DatasetError(ValueError):
    """A dataset that cannot be used at all (no classes, missing split, ...)."""


@dataclass(frozen=True)
class ImageRecord:
    sha256: str
    size: int
    mtime_ns: int
    width: int
    height: int
    mode: str  # the file's own PIL mode (RGBA, CMYK, I;16, ...), before conversion to RGB


@dataclass(frozen=True)
class SplitManifest:
    split: str
    digest: str
    files: dict[str, ImageRecord]  # relative path -> record
    quarantined: dict[str, str] = field(default_factory=dict)  # relative path -> reason

    @property
    def count(self) -> int:
        return len(self.files)

    def label_of(self, rel: str) -> str:
        """The class of an image: the first folder below the split (nested folders belong to it)."""
        return rel.split("/")[1]

    def nested(self) -> int:
        """Images found in folders nested inside a class folder."""
        return sum(1 for rel in self.files if rel.count("/") > 2)


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

    def quarantined(self) -> dict[str, str]:
        return {rel: why for s in self.splits.values() for rel, why in s.quarantined.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "name": self.name,
            "root": str(self.root),
            "classes": list(self.classes),
            "digest": self.digest,
            "splits": {
                s.split: {
                    "digest": s.digest,
                    "count": s.count,
                    "files": {rel: r.__dict__ for rel, r in s.files.items()},
                    "quarantined": s.quarantined,
                }
                for s in self.splits.values()
            },
        }

    def summary(self) -> dict[str, Any]:
        """What a person wants to see: counts per split and class, nested images, file modes, the quarantine."""
        out: dict[str, Any] = {"name": self.name, "root": str(self.root), "digest": self.digest, "splits": {}}
        for s in self.splits.values():
            out["splits"][s.split] = {
                "images": s.count,
                "per_class": dict(sorted(Counter(s.label_of(r) for r in s.files).items())),
                "nested": s.nested(),
                "modes": dict(sorted(Counter(r.mode for r in s.files.values()).items())),
                "quarantined": s.quarantined,
            }
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split_digest(files: dict[str, ImageRecord]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel].sha256}\n".encode())
    return h.hexdigest()


def decode_image(data: bytes, source: str) -> Image.Image:
    """Decode bytes into RGB (see :func:`evaluators.images.open_rgb`); broken files raise ``DatasetError``."""
    try:
        return open_rgb(io.BytesIO(data), source)
    except ImageDecodeError as exc:
        raise DatasetError(str(exc)) from exc


def _inspect(path: Path, rel: str) -> tuple[ImageRecord | None, str]:
    """Hash and decode one file: its record, or None and the reason it is quarantined."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"not an image file (extension {path.suffix or 'none'!r}; valid: {sorted(IMAGE_SUFFIXES)})"
    st = path.stat()
    if st.st_size == 0:
        return None, "empty file (0 bytes)"
    data = path.read_bytes()
    try:
        img = decode_image(data, rel)
        with Image.open(io.BytesIO(data)) as raw:  # decoded above: this only reads the header again
            mode = raw.mode
    except DatasetError as exc:
        return None, str(exc)
    if min(img.size) < MIN_SIDE:
        return None, f"image is {img.width}x{img.height} px, smaller than {MIN_SIDE} px on a side"
    return ImageRecord(_sha256(data), st.st_size, st.st_mtime_ns, img.width, img.height, mode), ""


def _walk(root: Path, class_dir: Path) -> list[tuple[str, str]]:
    """Every non-hidden file below a class folder, nested folders included, in a fixed order: (path, ``root``-relative).

    Plain strings, not ``Path`` objects: a scan of an unchanged tree is one ``stat`` a file, and building two paths
    a file cost more than the ``stat`` (a 50,000-image split is scanned by every measuring job).
    """
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(os.path.relpath(dirpath, root)).as_posix()
        found += [(os.path.join(dirpath, f), f"{rel_dir}/{f}") for f in sorted(filenames) if not f.startswith(".")]
    return found


def scan(root: str | Path, name: str | None = None, previous: DatasetManifest | None = None) -> DatasetManifest:
    """The manifest of an ImageFolder tree; files unchanged since ``previous`` (same size and mtime) are not read."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    splits: dict[str, SplitManifest] = {}
    classes: set[str] = set()
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DatasetError(f"split folder {split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
        old = previous.splits.get(split) if previous is not None else None
        files: dict[str, ImageRecord] = {}
        quarantined: dict[str, str] = {}
        by_hash: dict[str, str] = {}
        for cdir in class_dirs:
            classes.add(cdir.name)
            for path, rel in _walk(root, cdir):
                record, why = _cached(old, rel, path)
                if record is None and not why:
                    record, why = _inspect(Path(path), rel)
                if record is not None and record.sha256 in by_hash:
                    why = f"byte-identical duplicate of {by_hash[record.sha256]}"
                    record = None
                if record is None:
                    log.warning("quarantined %s: %s", rel, why)
                    quarantined[rel] = why
                    continue
                by_hash[record.sha256] = rel
                files[rel] = record
        splits[split] = SplitManifest(split, _split_digest(files), files, quarantined)
    if not splits:
        raise DatasetError(f"{root} has none of the split folders {list(SPLITS)}")
    return DatasetManifest(name or root.name, root, tuple(sorted(classes)), splits)


def _cached(old: SplitManifest | None, rel: str, path: str) -> tuple[ImageRecord | None, str]:
    """The previous record of an unchanged file (or its quarantine reason); ``(None, "")`` when it must be read."""
    if old is None:
        return None, ""
    record = old.files.get(rel)
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, f"cannot read: {exc}"
    if record is not None and record.size == st.st_size and record.mtime_ns == st.st_mtime_ns:
        return record, ""
    return None, ""


def index_path(root: Path, index_dir: Path) -> Path:
    """Where the manifest of the dataset at ``root`` lives: named by the folder and a hash of its absolute path."""
    absolute = str(root.resolve())
    return index_dir / f"{root.resolve().name}-{_sha256(absolute.encode())[:12]}.json"


def write_manifest(manifest: DatasetManifest, index_dir: Path) -> Path:
    path = index_path(manifest.root, index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def read_manifest(root: Path, index_dir: Path) -> DatasetManifest | None:
    path = index_path(root, index_dir)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if raw.get("version") != MANIFEST_VERSION:
        return None
    splits = {
        s: SplitManifest(
            s, v["digest"], {rel: ImageRecord(**r) for rel, r in v["files"].items()}, dict(v.get("quarantined", {}))
        )
        for s, v in raw["splits"].items()
    }
    return DatasetManifest(raw["name"], root, tuple(raw["classes"]), splits)


def load_manifest(root: str | Path, index_dir: str | Path, name: str | None = None) -> DatasetManifest:
    """The dataset's manifest, brought up to date: unchanged files cost a ``stat``, changed ones are read again."""
    root, index_dir = Path(root), Path(index_dir)
    previous = read_manifest(root, index_dir)
    manifest = scan(root, name or (previous.name if previous else None), previous)
    if previous != manifest:  # dataclass equality: every record, the root and the classes
        write_manifest(manifest, index_dir)
    return manifest


def write_digits(
    root: str | Path, index_dir: str | Path, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)
) -> DatasetManifest:
    """Write scikit-learn's bundled digits (1,797 real 8x8 scans) as a stratified, seeded ImageFolder tree.

    Idempotent: an existing tree is returned as is. Byte-identical scans are kept once, so no image can land in two
    splits.
    """
    root = Path(root)
    if root.is_dir():
        return load_manifest(root, index_dir, name="digits")
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
    return load_manifest(root, index_dir, name="digits")
