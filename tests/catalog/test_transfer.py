"""``--weights transfer``: a pretrained backbone from the hub cache beats the same recipe from scratch.

The "pretrained" checkpoint is made here: timm's tiny ``test_resnet`` trained on crops of eight real photographs
(scikit-image's), saved into a temporary Hugging Face cache as the hub delivers ``timm/test_resnet.r160_in1k``. The
target task is six *other* real photographs (textures and grayscale scenes) with five training crops each: with the
same recipe (the head alone, then the whole net at a lower rate), the pretrained start must score clearly higher.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.photos import hub_env, write_hub_checkpoint

ENTRY = "test_resnet.r160_in1k"
PRETRAIN = (
    "astronaut",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "chelsea",
    "rocket",
)
TARGET = ("camera", "coins", "clock", "brick", "grass", "gravel")

COMMON = '''
import numpy as np
from PIL import Image
import skimage.data
from evaluators.images import Preprocess

PRE = Preprocess(64, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)


class Crops:
    """Random square crops of real photos, preprocessed by timm's eval transform (a ``TrainingData``)."""

    def __init__(self, photos, per_class, seed, skip=0):
        rng = np.random.default_rng(seed)
        tf, xs, ys = PRE.transform(), [], []
        for label, name in enumerate(photos):
            img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            w, h = img.size
            for k in range(skip + per_class):
                s = int(rng.integers(min(w, h) // 4, min(w, h) // 2))
                x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                if k >= skip:
                    xs.append(tf(img.crop((x, y, x + s, y + s))).numpy())
                    ys.append(label)
        self.x, self.labels = np.stack(xs).astype(np.float32), np.asarray(ys)

    def __len__(self):
        return len(self.x)

    def rows(self, idx):
        return self.x[idx]
'''

TRANSFER = (
    COMMON
    + """
import json, sys, torch
from catalog import get_entry
from catalog.weights import FinetuneSource, ScratchSource, TimmHubSource, transfer_recipe

target = tuple(sys.argv[1].split(","))
train, held = Crops(target, 5, seed=1), Crops(target, 20, seed=2)
out = {}
for start, init in (("pretrained", TimmHubSource()), ("scratch", ScratchSource(0))):
    pulled = FinetuneSource(train, seed=0, init=init, recipe=transfer_recipe(9), name="transfer").pull(
        get_entry(sys.argv[2]), len(target))
    with torch.no_grad():
        pred = pulled.model.eval()(torch.from_numpy(held.x)).argmax(1).numpy()
    out[start] = {"top1": float((pred == held.labels).mean()), "details": pulled.details}
print(json.dumps(out, default=str))
"""
)


def test_pretrained_backbone_from_the_hub_cache_beats_scratch_with_the_same_recipe(tmp_path: Path) -> None:

    namespace: dict = {}
    exec(COMMON, namespace)  # the same crops code as the child
    from catalog import get_entry
    from catalog.weights import FinetuneSource

    pretrain = namespace["Crops"](PRETRAIN, 50, seed=0)
    backbone = FinetuneSource(pretrain, epochs=5, seed=0).pull(get_entry(ENTRY), 1000).model  # a 1000-way head
    write_hub_checkpoint(tmp_path / "hub", ENTRY, backbone.state_dict())

    env = {**os.environ, **hub_env(tmp_path / "hub")}
    done = subprocess.run(
        [sys.executable, "-c", TRANSFER, ",".join(TARGET), ENTRY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print("transfer vs scratch top-1:", got["pretrained"]["top1"], got["scratch"]["top1"])
    chance = 1 / len(TARGET)
    assert got["pretrained"]["top1"] >= got["scratch"]["top1"] + 0.06, got
    assert got["pretrained"]["top1"] > chance + 0.05, got
    assert got["pretrained"]["details"]["recipe"] == "head:3ep@0.003;all:6ep@0.0003"
    assert got["pretrained"]["details"]["init"] == "timm-hub" and got["scratch"]["details"]["init"] == "scratch"
