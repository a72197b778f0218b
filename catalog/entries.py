"""The frozen description of one catalog variant. Imports nothing heavy."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

_NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$")


class Family(enum.StrEnum):
    """CNN families of the selection guide (ViT is the non-CNN reference)."""

    RESNET = "resnet"
    EFFICIENTNET = "efficientnet"
    EFFICIENTNET_LITE = "efficientnet_lite"
    MOBILENET_V2 = "mobilenetv2"
    MOBILENET_V3 = "mobilenetv3"
    INCEPTION = "inception"
    DENSENET = "densenet"
    VGG = "vgg"
    CONVNEXT = "convnext"
    VIT = "vit"
    TEST = "test"  # timm's tiny test_* architectures, used by unit tests only


class Deployment(enum.StrEnum):
    """The guide's deployment targets."""

    CLOUD = "cloud"
    EDGE = "edge"
    MOBILE = "mobile"


@dataclass(frozen=True)
class PublishedFigures:
    """Reference figures as published for the pretrained weights, at the native resolution.

    ``gmacs`` counts multiply-accumulates (what torchvision's and the guide's "GFLOPs" columns actually count);
    ``gflops`` is derived as ``2 * gmacs`` and never mixed with it.
    """

    params_m: float
    gmacs: float
    top1: float  # ImageNet-1k top-1, percent
    source: str  # where the three figures come from (file or page), human readable

    @property
    def gflops(self) -> float:
        """Floating-point operations (1 MAC = 2 FLOPs)."""
        return 2.0 * self.gmacs


@dataclass(frozen=True)
class CatalogEntry:
    """One variant: ``name`` is timm's ``arch.tag`` (``resnet18.tv_in1k``)."""

    name: str
    family: Family
    input_size: int  # native square resolution of the pretrained weights
    published: PublishedFigures | None
    deployments: frozenset[Deployment] = field(default_factory=frozenset)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"catalog name {self.name!r} must look like 'arch' or 'arch.tag' (lowercase, digits, _)")

    @property
    def architecture(self) -> str:
        """The timm architecture name without the pretrained tag."""
        return self.name.split(".", 1)[0]

    @property
    def pretrained_tag(self) -> str | None:
        """The timm pretrained tag, if the name has one."""
        return self.name.split(".", 1)[1] if "." in self.name else None
