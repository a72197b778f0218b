import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluators.data import SPLITS, DatasetError, load_manifest, read_manifest, scan, write_digits
from evaluators.images import ImageSplit, Preprocess


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


def test_digits_are_stratified_and_complete(digits_root: Path, tmp_path: Path) -> None:
    m = load_manifest(digits_root, tmp_path)
    assert m.classes == tuple(str(i) for i in range(10))
    total = sum(s.count for s in m.splits.values())
    assert 1700 <= total <= 1797  # byte-identical scans are kept once
    for split in SPLITS:
        per_class = {c: sum(Path(r).parent.name == c for r in m.split(split).files) for c in m.classes}
        assert min(per_class.values()) > 0, (split, per_class)
    assert 0.55 < m.split("train").count / total < 0.65


def test_manifest_is_deterministic_kept_outside_the_data_and_matches_files(digits_root: Path, tmp_path: Path) -> None:
    again = write_digits(tmp_path / "digits", tmp_path / "index")
    first = load_manifest(digits_root, tmp_path / "index")
    assert again.digest == first.digest
    assert not list(digits_root.glob("*.json"))  # nothing written into the dataset folder
    (stored,) = [p for p in (tmp_path / "index").glob("digits-*.json") if str(digits_root) in p.read_text()]
    on_disk = json.loads(stored.read_text())
    rel, record = next(iter(on_disk["splits"]["heldout"]["files"].items()))
    assert hashlib.sha256((digits_root / rel).read_bytes()).hexdigest() == record["sha256"]


def test_other_seed_other_split(tmp_path: Path, digits_root: Path) -> None:
    assert write_digits(tmp_path / "d", tmp_path, seed=1).digest != load_manifest(digits_root, tmp_path).digest


def test_image_split_streams_batches_and_is_cached_once(digits_root: Path, tmp_path: Path) -> None:
    m = load_manifest(digits_root, tmp_path)
    pre = Preprocess(16, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=1.0)
    rels = sorted(m.split("heldout").files)
    labels = np.array([int(m.split("heldout").label_of(r)) for r in rels])
    split = ImageSplit([digits_root / r for r in rels], labels, pre, tmp_path / "cache" / "held.f32")
    batches = list(split.batches(64))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1) and sum(map(len, batches)) == len(rels)
    assert batches[0].shape[1:] == (3, 16, 16) and batches[0].dtype == np.float32
    cache = tmp_path / "cache" / "held.f32"
    mtime = cache.stat().st_mtime_ns
    np.testing.assert_array_equal(split.rows([3, 0]), np.concatenate(batches)[[3, 0]])
    assert cache.stat().st_mtime_ns == mtime  # read back, not written again
    # the rows are timm's eval transform of each image
    np.testing.assert_allclose(batches[0][0], pre([digits_root / rels[0]])[0], atol=1e-6)


def _user_folder(root: Path, digits_root: Path) -> Path:
    for split in ("train", "heldout"):
        for cls in ("3", "7"):
            shutil.copytree(digits_root / split / cls, root / split / ("cat" if cls == "3" else "dog"))
    return root


def test_any_user_imagefolder_loads(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    m = load_manifest(root, tmp_path / "index")
    assert m.classes == ("cat", "dog") and set(m.splits) == {"train", "heldout"}
    with pytest.raises(DatasetError, match="has no split 'calibration'"):
        m.split("calibration")


def test_bad_files_are_quarantined_by_name_with_the_reason(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    held = root / "heldout"
    (held / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = sorted((held / "dog").glob("*.png"))[0]
    (held / "dog" / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (held / "dog" / "empty.jpg").write_bytes(b"")
    (held / "dog" / "README.txt").write_text("notes")
    (held / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored, not quarantined
    shutil.copy(good, held / "dog" / "zz_copy.png")  # byte-identical within the split (the later name is quarantined)
    Image.new("L", (4, 4)).save(held / "cat" / "tiny.png")
    q = scan(root).split("heldout").quarantined
    assert set(q) == {
        "heldout/cat/broken.png",
        "heldout/dog/truncated.png",
        "heldout/dog/empty.jpg",
        "heldout/dog/README.txt",
        "heldout/dog/zz_copy.png",
        "heldout/cat/tiny.png",
    }
    assert "cannot decode image heldout/cat/broken.png" in q["heldout/cat/broken.png"]
    assert q["heldout/dog/empty.jpg"] == "empty file (0 bytes)"
    assert "not an image file" in q["heldout/dog/README.txt"] and "'.png'" in q["heldout/dog/README.txt"]
    assert q["heldout/dog/zz_copy.png"].startswith("byte-identical duplicate of heldout/dog/")
    assert "4x4 px" in q["heldout/cat/tiny.png"]


def test_decompression_bomb_is_quarantined(tmp_path: Path, digits_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    Image.new("L", (4000, 4000)).save(root / "heldout" / "cat" / "bomb.png")  # tiny file, 16 Mpx
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    assert "DecompressionBomb" in scan(root).split("heldout").quarantined["heldout/cat/bomb.png"]


def test_nested_folders_belong_to_their_class(tmp_path: Path, digits_root: Path) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    deep = root / "heldout" / "cat" / "2024" / "trip"
    deep.mkdir(parents=True)
    Image.new("L", (12, 12), 7).save(deep / "IMG_1.PNG")  # upper-case extension too
    m = scan(root)
    assert m.split("heldout").label_of("heldout/cat/2024/trip/IMG_1.PNG") == "cat"
    assert "heldout/cat/2024/trip/IMG_1.PNG" in m.split("heldout").files
    assert m.summary()["splits"]["heldout"]["nested"] == 1 and m.classes == ("cat", "dog")


def test_folder_without_classes_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "heldout").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"heldout has no class folders"):
        scan(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_added_removed_and_changed_files_give_a_new_digest_without_rereading_the_rest(
    tmp_path: Path, digits_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _user_folder(tmp_path / "pets", digits_root)
    index = tmp_path / "index"
    first = load_manifest(root, index)
    files = sorted(first.split("heldout").files)
    (root / files[0]).unlink()  # removed
    Image.new("L", (8, 8), 200).save(root / files[1])  # changed in place
    os.utime(root / files[1], ns=(1, 1))
    Image.new("L", (9, 9), 100).save(root / "heldout" / "dog" / "new.png")  # added
    import evaluators.data as data

    read: list[str] = []
    inspect = data._inspect
    monkeypatch.setattr(data, "_inspect", lambda path, rel: (read.append(rel), inspect(path, rel))[1])
    second = load_manifest(root, index)
    assert sorted(read) == sorted([files[1], "heldout/dog/new.png"])  # unchanged files cost only a stat
    assert second.digest != first.digest and files[0] not in second.split("heldout").files
    assert second.split("heldout").files[files[1]].width == 8
    stored = read_manifest(root, index)
    assert stored is not None and stored.digest == second.digest
    assert load_manifest(root, index).digest == second.digest  # stable when nothing changes
