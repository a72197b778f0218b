"""Pretrained models on a team's real photographs: cnnselect's numbers equal timm's own eval pipeline, image by image.

The checkpoints are seeded backbones with a head fitted to the photos (``tests.photos``), written into a temporary
Hugging Face cache exactly as a hub download leaves it, and read back by timm's real hub-loading code with the
network off (``HF_HUB_OFFLINE=1``). The four models cover the eval configs that differ: crop 0.875 bilinear at 224
(ResNet-18), crop 1.0 bicubic at the 288 px test size (EfficientNet-B2), 299 px (Inception-v3) and mean/std 0.5 (ViT).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.photos import QUARANTINED, hub_env, timm_reference, write_fitted_checkpoint, write_photo_folder

CLI = str(Path(sys.executable).parent / "cnnselect")
MODELS = {  # name: (input size, crop_pct, interpolation, mean[0])
    "efficientnet_b2.ra_in1k": (288, 1.0, "bicubic", 0.485),
    "inception_v3.tv_in1k": (299, 0.875, "bicubic", 0.5),
    "vit_small_patch16_224.augreg_in21k_ft_in1k": (224, 0.9, "bicubic", 0.5),
}
README_MODEL = ("resnet18.tv_in1k", (224, 0.875, "bilinear", 0.485))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("team-photos") / "photos"
    return root, write_photo_folder(root)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, photos: tuple[Path, dict]) -> tuple[Path, dict[str, Path]]:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    names = [*MODELS, README_MODEL[0]]
    return cache, {n: write_fitted_checkpoint(cache, n, seed, photos[1]) for seed, n in enumerate(names, 1)}


def _client(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _check_against_timm(home: Path, run_id: str, name: str, checkpoint: Path, expected: dict, config: tuple) -> float:
    """The logged predictions equal timm's, image by image; the logged top-1 is timm's top-1. Returns that top-1."""
    import mlflow.artifacts
    from timm.data import ImageNetInfo

    client = _client(home)
    run = client.get_run(run_id)
    size, crop, interpolation, mean0 = config
    p = run.data.params
    assert (p["image_size"], p["preprocess_crop_pct"], p["preprocess_interpolation"]) == (
        str(size),
        str(crop),
        interpolation,
    )
    assert json.loads(p["preprocess_mean"])[0] == pytest.approx(mean0)
    assert p["label_map"] == "imagenet-synset" and p["head_outputs"] == "1000"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="", tracking_uri=uri))
    rows = list(csv.DictReader((local / "predictions" / "predictions.csv").open()))
    assert sorted(r["path"] for r in rows) == sorted(expected)  # RGBA, CMYK, 16-bit, EXIF, nested: all scored
    label_map = json.loads((local / "data" / "label_map.json").read_text())
    synsets = ImageNetInfo().label_names()
    assert {c: int(i) for i, c in label_map["classes"].items()} == {
        s: synsets.index(s) for s in {k.split("/")[1] for k in expected}
    }
    assert set(json.loads((local / "data" / "quarantined.json").read_text())) == set(QUARANTINED)
    reference = timm_reference(name, checkpoint, expected)
    for r in rows:
        ref = np.asarray(reference[r["path"]])
        assert r["top1"] == synsets[int(np.argmax(ref))], r["path"]
        assert float(r["logit1"]) == pytest.approx(float(ref.max()), rel=1e-3, abs=1e-3), r["path"]
    timm_top1 = np.mean([synsets[int(np.argmax(reference[k]))] == k.split("/")[1] for k in expected])
    assert run.data.metrics["top1"] == pytest.approx(timm_top1)
    assert run.data.metrics["top1_tied"] == 0
    return float(timm_top1)


SCRIPT = """
import json, sys
from catalog import get_profile
from cnnselect.pipeline import evaluate_model
from evaluators.latency import LatencySettings

fast = LatencySettings(warmup=1, min_iters=3, min_seconds=0.0, large_batch=0)  # accuracy is under test, not speed
out = [o.to_dict() for v in sys.argv[2:] for o in evaluate_model(v, get_profile("full"), sys.argv[1], ("cpu",),
       "photos", "timm-hub", latency=fast)]
print(json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_pretrained_models_on_imagenet_folders_log_timms_own_top1(photos, hub, tmp_path: Path) -> None:
    root, expected = photos
    cache, checkpoints = hub
    home = Path(os.environ["CNNSELECT_HOME"])
    env = {**os.environ, **hub_env(cache)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), *MODELS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert [o["status"] for o in outcomes] == ["ok"] * len(MODELS), [o.get("error") for o in outcomes]
    for o in outcomes:
        top1 = _check_against_timm(
            home, o["run_id"], o["variant"], checkpoints[o["variant"]], expected, MODELS[o["variant"]]
        )
        assert top1 == 1.0  # the fitted head recognises every photo through timm's own transform


@pytest.mark.slow
def test_readme_evaluate_with_hub_weights_on_real_photos(photos, hub, tmp_path: Path) -> None:
    """The README's command: ``cnnselect evaluate --dataset <photos> --profile full --weights timm-hub``, cpu + edge."""
    root, expected = photos
    cache, checkpoints = hub
    name, config = README_MODEL
    env = {**os.environ, **hub_env(cache), "CNNSELECT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    args = [
        "evaluate",
        "--dataset",
        str(root),
        "--profile",
        "full",
        "--weights",
        "timm-hub",
        "--models",
        name,
        "--runners",
        "cpu,edge",
        "--json",
    ]
    out = subprocess.run([CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-4000:]
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(payload["dataset"]["quarantined"]) == set(QUARANTINED)
    for q in QUARANTINED:
        assert f"quarantined {q}" in out.stderr  # named in the terminal
    by_runner = {r["runner"]: r for r in payload["results"]}
    assert [by_runner[r]["status"] for r in ("cpu", "edge")] == ["ok", "ok"], payload["results"]
    assert (
        _check_against_timm(tmp_path / "home", by_runner["cpu"]["run_id"], name, checkpoints[name], expected, config)
        == 1.0
    )
    int8 = _client(tmp_path / "home").get_run(by_runner["edge"]["run_id"]).data.metrics
    assert int8["top1_tied"] == 0  # the INT8 artifact's classifier is FP32: no answer rests on a tie rule
    assert int8["top1"] >= 0.9 and int8["top1_drop_vs_fp32"] == pytest.approx(1.0 - int8["top1"])
    assert int8["peak_rss_mb"] > 0 and int8["peak_rss_mb_prepare_edge"] > 0
    # production code: the answer applies the measured preprocessing and runs the measured artifact
    from registry.client import Registry
    from registry.constraints import Constraints
    from tests.photos import timm_transform

    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    answer = Registry(tracking_uri=uri).get_best(Constraints(target="cpu", dataset="photos"))
    rels = ["heldout/n04266014/IMG_0001.JPG", "heldout/n02123045/transparent.png", "heldout/n04548280/gray16.png"]
    batch = answer.preprocess([root / r for r in rels])
    tf = timm_transform(name)
    for row, rel in zip(batch, rels, strict=True):
        np.testing.assert_allclose(row, tf(expected[rel]).numpy(), atol=1e-6)
    logits = answer.load().run(None, {"input": batch})[0]
    from timm.data import ImageNetInfo

    assert [ImageNetInfo().label_names()[i] for i in logits.argmax(1)] == [r.split("/")[1] for r in rels]


def test_hub_weights_on_classes_that_are_not_imagenet_are_refused(digits_root: Path) -> None:
    from catalog import get_entry
    from cnnselect.inputs import label_map_for
    from evaluators.labels import LabelMapError

    with pytest.raises(LabelMapError, match=r"not ImageNet classes: \['cat', 'dog'\].*--weights transfer"):
        label_map_for("timm-hub", get_entry("resnet18.tv_in1k"), ("cat", "dog"))
    by_name = label_map_for("timm-hub", get_entry("resnet18.tv_in1k"), ("goldfish", "Tench", "great_white_shark"))
    assert by_name.kind == "imagenet-name" and by_name.index() == {"Tench": 0, "goldfish": 1, "great_white_shark": 2}
    with pytest.raises(LabelMapError, match=r"ambiguous ImageNet names.*\['crane'\]"):
        label_map_for("timm-hub", get_entry("resnet18.tv_in1k"), ("crane", "tench"))
    assert label_map_for("transfer", get_entry("resnet18.tv_in1k"), ("cat", "dog")).num_outputs == 2
