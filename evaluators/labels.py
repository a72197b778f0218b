"""Which output of a model's head each class folder is scored against.

- ``folders``: a head sized to the dataset's classes, index = position of the folder in sorted order (models
  trained on the team's ``train`` split: ``finetune``, ``transfer``, ``scratch``).
- ``imagenet``: the checkpoint's own 1000-way ImageNet head, kept as it is; each folder is mapped to its ImageNet
  index through timm's ImageNet metadata (``timm.data.ImageNetInfo``), by synset id (``n01440764``) or by class name
  (``tench``, ``golden_retriever``, ``Golden retriever``). Top-1 and top-5 are over all 1000 outputs.

Every run logs its label map (``label_map.json``: head index -> folder name and ImageNet label).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IMAGENET_CLASSES = 1000


class LabelMapError(ValueError):
    """Class folders that cannot be scored against a checkpoint's head; the message says which and what to do."""


@dataclass(frozen=True)
class LabelMap:
    kind: str  # "folders" | "imagenet-synset" | "imagenet-name"
    classes: tuple[str, ...]  # the dataset's class folders, sorted
    indices: tuple[int, ...]  # folder i -> index into the head
    num_outputs: int  # the head's size

    def index(self) -> dict[str, int]:
        return dict(zip(self.classes, self.indices, strict=True))

    @property
    def keeps_pretrained_head(self) -> bool:
        return self.kind.startswith("imagenet")

    def head_names(self) -> list[str]:
        """A name for every output of the head: the folder mapped to it, else its ImageNet synset (or its index)."""
        names = {i: c for c, i in self.index().items()}
        if self.keeps_pretrained_head:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            return [names.get(i, info.index_to_label_name(i)) for i in range(self.num_outputs)]
        return [names.get(i, str(i)) for i in range(self.num_outputs)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "num_outputs": self.num_outputs,
            "classes": {str(i): c for c, i in sorted(self.index().items(), key=lambda kv: kv[1])},
        }
        if self.keeps_pretrained_head:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            out["imagenet"] = {
                str(i): {"synset": info.index_to_label_name(i), "description": info.index_to_description(i)}
                for _, i in sorted(self.index().items(), key=lambda kv: kv[1])
            }
        return out


def folder_map(classes: tuple[str, ...]) -> LabelMap:
    return LabelMap("folders", classes, tuple(range(len(classes))), len(classes))


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def imagenet_map(classes: tuple[str, ...]) -> LabelMap | None:
    """The ImageNet mapping when every folder is an ImageNet synset id, or every folder an unambiguous class name."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    synsets = {s: i for i, s in enumerate(info.label_names())}
    if classes and all(c in synsets for c in classes):
        return LabelMap("imagenet-synset", classes, tuple(synsets[c] for c in classes), IMAGENET_CLASSES)
    by_name: dict[str, set[int]] = {}
    for i in range(IMAGENET_CLASSES):
        description = info.index_to_description(i)
        for alias in [description, *description.split(",")]:
            by_name.setdefault(_norm(alias), set()).add(i)
    found = [by_name.get(_norm(c), set()) for c in classes]
    if classes and all(len(f) == 1 for f in found):
        return LabelMap("imagenet-name", classes, tuple(next(iter(f)) for f in found), IMAGENET_CLASSES)
    return None


def explain_mismatch(classes: tuple[str, ...], variant: str) -> str:
    """Why ``classes`` cannot be scored on a pretrained ImageNet head, and the fix."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    synsets = set(info.label_names())
    names: dict[str, int] = {}
    for i in range(IMAGENET_CLASSES):
        for alias in info.index_to_description(i).split(","):
            names[_norm(alias)] = names.get(_norm(alias), 0) + 1
    unknown = [c for c in classes if c not in synsets and names.get(_norm(c), 0) == 0]
    ambiguous = [c for c in classes if c not in synsets and names.get(_norm(c), 0) > 1]
    parts = []
    if unknown:
        parts.append(f"not ImageNet classes: {unknown[:8]}" + (" ..." if len(unknown) > 8 else ""))
    if ambiguous:
        parts.append(f"ambiguous ImageNet names (use the synset id instead): {ambiguous[:8]}")
    return (
        f"{variant}: pretrained weights without training keep the checkpoint's 1000-class ImageNet head, but the "
        f"dataset's {len(classes)} class folders are {'; '.join(parts) or 'not all ImageNet classes'}. Name the "
        "folders by ImageNet synset id (e.g. n01440764) or class name (e.g. tench), or train a head for these classes: "
        "--weights transfer (pretrained backbone, new head fine-tuned on train) or --weights finetune (from scratch)"
    )
