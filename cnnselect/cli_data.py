"""``cnnselect data <dir>``: a dataset's summary and what was quarantined.

Images per split and class, images in nested folders, file modes, and each quarantined file with the reason; the
manifest is brought up to date on the way (changed files are read again).
"""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.table import Table

from cnnselect.console import console


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("data", help="a dataset's summary and its quarantined files (default: the bundled digits)")
    d.add_argument("dataset", nargs="?", help="ImageFolder root with train/calibration/heldout (default: digits)")
    d.add_argument("--json", action="store_true")


def cmd_data(args: argparse.Namespace) -> int:
    from evaluators.data import load_manifest, write_digits
    from registry.settings import Settings

    s = Settings()
    if args.dataset:
        manifest = load_manifest(args.dataset, s.manifest_dir)
    else:
        manifest = write_digits(s.default_dataset_dir, s.manifest_dir, seed=s.seed)
    summary = manifest.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    console.print(
        f"dataset [bold]{escape(manifest.name)}[/] at {escape(str(manifest.root))}, digest {manifest.digest[:12]}"
    )
    table = Table("split", "images", "classes", "nested", "file modes", "quarantined")
    for split, info in summary["splits"].items():
        modes = ", ".join(f"{m} {n}" for m, n in info["modes"].items())
        table.add_row(
            split,
            str(info["images"]),
            str(len(info["per_class"])),
            str(info["nested"]),
            escape(modes),
            str(len(info["quarantined"])),
        )
    console.print(table)
    for info in summary["splits"].values():
        for rel, why in sorted(info["quarantined"].items()):
            console.print(f"[yellow]quarantined[/] {escape(rel)}: {escape(why)}")
    return 0
