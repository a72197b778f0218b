import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluators.data import (
    SPLITS,
    DatasetError,
    Preprocess,
    load_manifest,
    load_split,
    scan,
    write_digits,
    write_manifest,
)

PRE = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _hashes(root: Path, split: str) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / split).rglob("*.png")}


def test_splits_are_disjoint_by_content_hash(digits_root: Path) -> None:
    h = {s: _hashes(digits_root, s) for s in SPLITS}
    assert all(h.values())
    assert (
        not (h["train"] & h["calibration"])
        and not (h["train"] & h["heldout"])
        and not (h["calibration"] & h["heldout"])
    )


def test_digits_are_stratified_and_complete(digits_root: Path) -> None:
    m = load_manifest(digits_root)
    assert m.classes == tuple(str(i) for i in range(10))
    total = sum(s.count for s in m.splits.values())
    assert 1700 <= total <= 1797  # byte-identical scans are kept once
    for split in SPLITS:
        per_class = {c: sum(Path(r).parent.name == c for r in m.split(split).files) for c in m.classes}
        assert min(per_class.values()) > 0, (split, per_class)
    assert 0.55 < m.split("train").count / total < 0.65


def test_manifest_is_deterministic_and_matches_files(digits_root: Path, tmp_path: Path) -> None:
    again = write_digits(tmp_path / "digits")
    first = load_manifest(digits_root)
    assert again.digest == first.digest
    on_disk = json.loads((digits_root / "manifest.json").read_text())
    rel, sha = next(iter(on_disk["splits"]["heldout"]["files"].items()))
    assert hashlib.sha256((digits_root / rel).read_bytes()).hexdigest() == sha


def test_other_seed_other_split(tmp_path: Path, digits_root: Path) -> None:
    assert write_digits(tmp_path / "d", seed=1).digest != load_manifest(digits_root).digest


def test_load_split_shapes_and_cache(digits_root: Path, tmp_path: Path) -> None:
    m = load_manifest(digits_root)
    x, y = load_split(m, "heldout", PRE, tmp_path / "cache")
    assert x.shape == (m.split("heldout").count, 3, 16, 16) and x.dtype == np.float32
    assert set(y.tolist()) == set(range(10))
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    x2, y2 = load_split(m, "heldout", PRE, tmp_path / "cache")
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def _user_folder(root: Path, digits_root: Path) -> Path:
    for split in ("train", "heldout"):
        for cls in ("3", "7"):
            shutil.copytree(digits_root / split / cls, root / split / ("cat" if cls == "3" else "dog"))
    return root


def test_any_user_imagefolder_loads(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    m = load_manifest(root)
    assert m.classes == ("cat", "dog") and set(m.splits) == {"train", "heldout"}
    x, y = load_split(m, "heldout", PRE)
    assert len(x) == m.split("heldout").count and set(y.tolist()) == {0, 1}
    with pytest.raises(DatasetError, match="has no split 'calibration'"):
        m.split("calibration")


def test_unreadable_images_are_skipped_with_reason(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    (root / "heldout" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = next((root / "heldout" / "dog").glob("*.png")).read_bytes()
    (root / "heldout" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    m = scan(root)
    skipped = m.split("heldout").skipped
    assert set(skipped) == {"heldout/cat/broken.png", "heldout/dog/truncated.png"}
    assert all("cannot decode image" in why for why in skipped.values())
    write_manifest(m)
    x, _ = load_split(load_manifest(root), "heldout", PRE)
    assert len(x) == m.split("heldout").count


def test_decompression_bomb_is_refused(tmp_path: Path, digits_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    Image.new("L", (4000, 4000)).save(root / "heldout" / "cat" / "bomb.png")  # tiny file, 16 Mpx
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    assert "heldout/cat/bomb.png" in scan(root).split("heldout").skipped


def test_folder_without_classes_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "heldout").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"heldout has no class folders"):
        scan(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_changed_image_is_detected(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    m = load_manifest(root)
    victim = root / sorted(m.split("heldout").files)[0]
    Image.new("L", (8, 8), 255).save(victim)
    with pytest.raises(DatasetError, match="changed since the manifest"):
        load_split(m, "heldout", PRE)
