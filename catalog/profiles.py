"""Named sets of catalog entries with the settings they are evaluated at."""

from __future__ import annotations

from dataclasses import dataclass

from catalog._nametable import NameTable


@dataclass(frozen=True)
class Profile:
    """What a sweep evaluates: the models, and the reduced settings that keep it affordable.

    ``image_size`` overrides the evaluation resolution (the bundled digits are 8x8 scans, upsampled to 32 px); ``None``
    evaluates each model at its own eval resolution (timm's config for the tag: 224, 288, 299, 600 px ...). It is part
    of the operating point and of the idempotency key. ``epochs`` is the training budget of the ``finetune`` and
    ``transfer`` weights sources.
    """

    name: str
    models: tuple[str, ...]
    image_size: int | None
    epochs: int
    description: str


PROFILES: NameTable[Profile] = NameTable("profile")

PROFILES.add(
    "demo",
    Profile(
        name="demo",
        models=(
            "resnet18.tv_in1k",
            "mobilenetv3_small_100.lamb_in1k",
            "mobilenetv3_large_100.ra_in1k",
            "mobilenetv2_100.ra_in1k",
            "efficientnet_b0.ra_in1k",
            "tf_efficientnet_lite0.in1k",
        ),
        image_size=32,
        epochs=8,
        description="Six small variants across five families at 32 px (a reduced setting: the digits are 8x8 scans), "
        "trained on the bundled digits; quick on 2 CPU cores.",
    ),
)
PROFILES.add(
    "smoke",
    Profile(
        name="smoke",
        models=("test_resnet.r160_in1k", "test_efficientnet.r160_in1k"),
        image_size=32,
        epochs=3,
        description="timm's tiny test architectures: the reduced setting used by the end-to-end tests.",
    ),
)


def _full() -> Profile:
    from catalog.entries import Family
    from catalog.families import ENTRIES

    return Profile(
        name="full",
        models=tuple(e.name for e in ENTRIES if e.family is not Family.TEST),
        image_size=None,
        epochs=10,
        description="Every family of the selection guide, each at its own eval resolution: hours on a CPU.",
    )


PROFILES.add("full", _full())
