import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from catalog import get_entry
from catalog.weights import FileSource, FinetuneSource, ScratchSource, WeightsError, create_model, weights_digest
from tests.conftest import REPO

ENTRY = "test_resnet.r160_in1k"

HUB_PULL = """
import json, sys
from catalog import get_entry
from catalog.weights import TimmHubSource, WeightsError
try:
    pulled = TimmHubSource().pull(get_entry(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps({"digest": pulled.weights_digest, "source": pulled.source}))
except WeightsError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _hub_pull(cache: Path, num_classes: int) -> dict:
    # A subprocess, so that huggingface_hub reads HF_HUB_OFFLINE/HF_HUB_CACHE at import, as it would in production.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    out = subprocess.run(
        [sys.executable, "-c", HUB_PULL, ENTRY, str(num_classes)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_hub_cache(cache: Path, state: dict[str, torch.Tensor]) -> None:
    """The huggingface_hub cache layout for timm/<entry>, as a real download leaves it."""
    repo = cache / f"models--timm--{ENTRY}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))


def test_hub_source_reads_the_local_cache_offline(tmp_path: Path) -> None:
    torch.manual_seed(123)
    reference = create_model(get_entry(ENTRY), num_classes=1000)
    _write_hub_cache(tmp_path / "hub", reference.state_dict())
    got = _hub_pull(tmp_path / "hub", 1000)
    assert got == {"digest": weights_digest(reference), "source": "timm-hub"}


def test_hub_source_offline_without_cache_is_a_clear_error(tmp_path: Path) -> None:
    got = _hub_pull(tmp_path / "empty", 1000)
    assert "error" in got and ENTRY in got["error"] and "hub" in got["error"]


def test_file_source_prefers_safetensors_and_checks_fit(tmp_path: Path) -> None:
    entry = get_entry(ENTRY)
    torch.manual_seed(7)
    model = create_model(entry, num_classes=10)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    pulled = FileSource(str(tmp_path / "w.safetensors")).pull(entry, 10)
    assert pulled.weights_digest == weights_digest(model)
    with pytest.raises(WeightsError, match="does not fit"):
        FileSource(str(tmp_path / "w.safetensors")).pull(entry, 3)


class _Evil:
    def __reduce__(self):  # executing this on load would create a file
        return (os.system, ("touch /tmp/cnnselect-pwned",))


def test_file_source_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, str(path))
    with pytest.raises(WeightsError, match="refusing to load"):
        FileSource(str(path)).pull(get_entry(ENTRY), 10)
    assert not Path("/tmp/cnnselect-pwned").exists()


def test_plain_torch_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    entry = get_entry(ENTRY)
    model = create_model(entry, num_classes=10)
    torch.save({"state_dict": model.state_dict()}, str(tmp_path / "ok.pt"))
    assert FileSource(str(tmp_path / "ok.pt")).pull(entry, 10).weights_digest == weights_digest(model)


def test_digest_is_deterministic_and_sensitive() -> None:
    entry = get_entry(ENTRY)
    a, b = ScratchSource(seed=1).pull(entry, 10), ScratchSource(seed=1).pull(entry, 10)
    c = ScratchSource(seed=2).pull(entry, 10)
    assert a.weights_digest == b.weights_digest != c.weights_digest


def test_finetune_learns_the_train_split(digits_root: Path, tmp_path: Path) -> None:
    from cnnselect.inputs import open_split
    from evaluators.data import load_manifest
    from evaluators.images import Preprocess
    from evaluators.labels import folder_map
    from registry.settings import Settings

    settings = Settings(home=tmp_path)
    m = load_manifest(digits_root, settings.manifest_dir)
    pre = Preprocess(32, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)
    train = open_split(m, "train", pre, folder_map(m.classes), settings)
    held = open_split(m, "heldout", pre, folder_map(m.classes), settings)
    losses: list[float] = []
    pulled = FinetuneSource(train, epochs=3, progress=lambda e, loss: losses.append(loss)).pull(get_entry(ENTRY), 10)
    xh = np.concatenate(list(held.batches(256)))
    with torch.no_grad():
        acc = float((pulled.model(torch.from_numpy(xh)).argmax(1).numpy() == held.labels).mean())
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert acc > 0.5  # chance is 0.1
    assert pulled.details["epochs"] == 3 and np.isfinite(pulled.details["train_loss"])


def test_measured_scratch_weights_leave_no_norm_scale_at_zero() -> None:
    """timm zero-initialises each residual block's last norm; measured as-is, a converter folds those branches away."""
    import torch

    from catalog import get_entry
    from catalog.weights import ScratchSource

    def zero_norms(model: torch.nn.Module) -> int:
        return sum(
            1
            for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.weight is not None and not m.weight.any()
        )

    entry = get_entry("test_resnet.r160_in1k")
    start = ScratchSource(0).pull(entry, 10)  # the start of training keeps timm's zero-init trick
    measured = ScratchSource(0, measured=True).pull(entry, 10)
    assert zero_norms(start.model) > 0
    assert zero_norms(measured.model) == 0 and measured.details["revived_norms"] == zero_norms(start.model)
    assert measured.weights_digest != start.weights_digest  # measured scratch weights are other weights: other keys
