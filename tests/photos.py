"""Real photographs (scikit-image ships them in its wheel) laid out as a team's ImageNet-style ImageFolder.

Each class folder is an ImageNet synset; every image is a crop of a real photo at its own size, aspect ratio and
format (JPEG, PNG, WEBP, BMP, TIFF, upper-case extensions). The held-out split also holds the awkward files real
folders have: RGBA with transparency, CMYK, 16-bit grayscale, an EXIF-rotated phone JPEG, images in a nested folder,
and a corrupt, an empty and a non-image file (which must be quarantined, not fatal).

``expected_rgb`` says, for each held-out image, the upright 8-bit RGB picture it shows, so a reference pipeline can
be run on what the file *means* (timm's reader gets RGBA, 16-bit and EXIF wrong, so it cannot be run on the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# synset -> scikit-image photos of it
CLASSES = {
    "n02123045": ("chelsea", "cat"),  # tabby cat
    "n07920052": ("coffee",),  # espresso
    "n04548280": ("clock",),  # wall clock
    "n04266014": ("rocket",),  # space shuttle
}
FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("JPG", "JPEG"), ("bmp", "BMP"), ("tif", "TIFF"))
# (left, top, right, bottom) as fractions of the photo: crops of different sizes and aspect ratios
CROPS = (
    (0.0, 0.0, 1.0, 1.0),
    (0.1, 0.1, 0.9, 0.9),
    (0.0, 0.2, 1.0, 0.8),  # wide
    (0.3, 0.0, 0.7, 1.0),  # tall
    (0.05, 0.05, 0.6, 0.6),
    (0.4, 0.4, 0.95, 0.95),
    (0.2, 0.0, 0.8, 0.5),
    (0.0, 0.5, 0.5, 1.0),
)
SCALES = (1.0, 0.55)


def _photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr)
    return img.convert("RGB")


def _variants(photo: Image.Image) -> list[Image.Image]:
    w, h = photo.size
    out = []
    for scale in SCALES:
        for left, top, right, bottom in CROPS:
            crop = photo.crop((int(left * w), int(top * h), int(right * w), int(bottom * h)))
            size = (max(16, int(crop.width * scale)), max(16, int(crop.height * scale)))
            out.append(crop.resize(size, Image.Resampling.LANCZOS) if scale != 1.0 else crop)
    return out


def _save(img: Image.Image, path: Path, fmt: str, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}), **kw)


def write_photo_folder(root: Path) -> dict[str, Image.Image]:
    """The ImageFolder tree under ``root``; returns the upright RGB picture of every held-out image (by rel path)."""
    expected: dict[str, Image.Image] = {}
    rng = np.random.default_rng(0)
    for synset, photos in CLASSES.items():
        images = [v for name in photos for v in _variants(_photo(name))]
        order = rng.permutation(len(images))
        for n, i in enumerate(order):
            img = images[i]
            split = "heldout" if n % 4 != 3 else ("train" if n % 8 == 3 else "calibration")
            ext, fmt = FORMATS[n % len(FORMATS)]
            rel = f"{split}/{synset}/{synset}_{n:03d}.{ext}"
            # the same bytes in two splits would be a leak: nudge one pixel so each file is its own image
            img = img.copy()
            img.putpixel((0, 0), (n % 256, (n * 7) % 256, (n * 13) % 256))
            _save(img, root / rel, fmt)
            if split == "heldout":
                expected[rel] = Image.open(root / rel).convert("RGB")  # what the file holds (lossy formats too)
    held = root / "heldout"
    cat = _photo("chelsea")
    # RGBA with a transparent border: composited on white
    rgba = cat.convert("RGBA")
    alpha = Image.new("L", cat.size, 0)
    alpha.paste(255, (40, 30, cat.width - 40, cat.height - 30))
    rgba.putalpha(alpha)
    _save(rgba, held / "n02123045" / "transparent.png", "PNG")
    white = Image.new("RGBA", cat.size, (255, 255, 255, 255))
    expected["heldout/n02123045/transparent.png"] = Image.alpha_composite(white, rgba).convert("RGB")
    # CMYK TIFF (PIL's RGB -> CMYK -> RGB round trip is exact)
    coffee = _photo("coffee").resize((300, 200))
    _save(coffee.convert("CMYK"), held / "n07920052" / "cmyk.tiff", "TIFF")
    expected["heldout/n07920052/cmyk.tiff"] = coffee
    # 16-bit grayscale PNG: every 8-bit level times 257
    clock = _photo("clock").convert("L")
    sixteen = Image.fromarray(np.asarray(clock).astype(np.uint16) * 257)
    _save(sixteen, held / "n04548280" / "gray16.png", "PNG")
    expected["heldout/n04548280/gray16.png"] = clock.convert("RGB")
    # a phone JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view it)
    rocket = _photo("rocket").resize((320, 214))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = held / "n04266014" / "IMG_0001.JPG"
    _save(rocket.transpose(Image.Transpose.ROTATE_90), path, "JPEG", exif=exif.tobytes())
    with Image.open(path) as raw:  # the stored pixels, turned the way the tag says
        expected["heldout/n04266014/IMG_0001.JPG"] = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    # nested folders belong to their class
    for k, img in enumerate(_variants(_photo("cat"))[:3]):
        rel = f"heldout/n02123045/more/deeper/nested_{k}.png"
        _save(img, root / rel, "PNG")
        expected[rel] = img
    # what must be quarantined, by name
    (held / "n07920052" / "truncated.jpg").write_bytes((root / next(iter(expected))).read_bytes()[:300])
    (held / "n07920052" / "empty.png").write_bytes(b"")
    (held / "n04548280" / "notes.txt").write_text("not an image")
    (held / "n04548280" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return expected


QUARANTINED = ("heldout/n07920052/truncated.jpg", "heldout/n07920052/empty.png", "heldout/n04548280/notes.txt")


def _spread_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, as trained weights have (fresh ones are 0/1 and flatten the logits)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def hub_env(cache: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)


def timm_transform(name: str):
    """timm's eval transform for the tag, as ``validate.py`` builds it (test size preferred)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    return create_transform(
        **resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg(name).to_dict(), use_test_size=True)
    )


def timm_reference(name: str, checkpoint: Path, images: dict[str, Image.Image]) -> dict[str, list[float]]:
    """timm's own eval pipeline on the checkpoint: ``resolve_data_config`` (test size), ``create_transform``, torch."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}).eval()
    tf = create_transform(**resolve_data_config({}, model=model, use_test_size=True))
    out = {}
    with torch.no_grad():
        for rel, img in images.items():
            out[rel] = model(tf(img).unsqueeze(0))[0].tolist()
    return out


def write_fitted_checkpoint(cache: Path, name: str, seed: int, images: dict[str, Image.Image]) -> Path:
    """A checkpoint that recognises these photos, as the hub would deliver it (huggingface_hub cache layout).

    A seeded backbone with spread BatchNorm statistics, and a 1000-way head fitted by least squares on the backbone's
    features of the photos, seen through timm's own eval transform: timm's pipeline scores 1.0 with it, and any other
    preprocessing (a squashed resize, another crop, another mean) scores less.
    """
    import timm
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    _spread_batchnorm(model, seed)
    tf = create_transform(**resolve_data_config({}, model=model, use_test_size=True))
    synsets = ImageNetInfo().label_names()
    targets = [synsets.index(rel.split("/")[1]) for rel in images]
    with torch.no_grad():
        x = torch.stack([tf(img) for img in images.values()])
        feats = torch.cat(
            [model.forward_head(model.forward_features(x[i : i + 16]), pre_logits=True) for i in range(0, len(x), 16)]
        )
        classes = sorted(set(targets))
        onehot = torch.zeros(len(targets), len(classes), dtype=torch.float64)
        for row, t in enumerate(targets):
            onehot[row, classes.index(t)] = 1.0
        design = torch.cat([feats.double(), torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        solution = torch.linalg.lstsq(design, onehot, driver="gelsd").solution  # (features + 1) x classes
        head = model.get_classifier()
        head.weight.zero_()
        head.bias.fill_(-1.0)  # every other ImageNet class below the fitted ones
        for j, c in enumerate(classes):
            head.weight[c] = solution[:-1, j].float()
            head.bias[c] = solution[-1, j].float()
    return write_hub_checkpoint(cache, name, model.state_dict(), f"{seed:040x}")


def write_hub_checkpoint(cache: Path, name: str, state: dict, commit: str = "f" * 40) -> Path:
    """``state`` as the hub delivers timm's ``name``: the huggingface_hub cache layout, ``model.safetensors``."""
    import timm
    from safetensors.torch import save_file

    repo = cache / f"models--{timm.get_pretrained_cfg(name).hf_hub_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    path = snap / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
