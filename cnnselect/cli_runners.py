"""``cnnselect runners``: every runner by name, its precision (and host kind), whether it can run here (and why not)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from cnnselect.console import EXIT_OK, console


def runner_rows() -> list[dict[str, Any]]:
    """One row per registered runner; a runner whose availability check itself fails is unavailable with the error."""
    from evaluators.runners import RUNNER_HOST, RUNNER_NAMES, get_runner

    rows = []
    for name in RUNNER_NAMES:
        runner = get_runner(name)
        try:
            avail = runner.availability()
            available, reason = avail.available, avail.reason
        except Exception as exc:  # a broken install is a reason to report, not a crashed listing
            available, reason = False, f"availability check failed: {type(exc).__name__}: {exc}"
        row = {"name": name, "host": RUNNER_HOST[name], "precision": runner.precision}
        rows.append({**row, "available": available, "reason": reason})
    return rows


def add_runners_parser(sub: Any) -> None:
    sp = sub.add_parser("runners", help="every runner: precision, and whether it can run on this machine (and why not)")
    sp.add_argument("--json", action="store_true")


def cmd_runners(args: argparse.Namespace) -> int:
    rows = runner_rows()
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    table = Table(title=f"Runners ({sum(r['available'] for r in rows)} of {len(rows)} available here)")
    for col in ("runner", "precision", "available", "reason"):  # the host kind: in --json (80 columns keep the reason)
        table.add_column(col)
    for r in rows:
        available = "[green]yes[/]" if r["available"] else "[red]no[/]"
        table.add_row(r["name"], r["precision"], available, escape(r["reason"]))
    console.print(table)
    return EXIT_OK
