"""The team commands of ``cnnselect``: ``report``, ``promote`` and ``teams validate``.

A team file that does not validate never stops the others: every bad file is reported (its file, the key and what
would have been valid), the good teams are promoted or reported, and the exit code is 2 when any file was bad.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from cnnselect.console import EXIT_NOTHING, EXIT_OK, EXIT_USAGE, console, err_console
from cnnselect.views import esc, wrap

if TYPE_CHECKING:
    from registry.errors import RegistryError
    from registry.teams import Team


def _teams(names: list[str] | None, folder: str | None) -> tuple[list[Team], list[RegistryError]]:
    """The named teams (default: every file of the folder) that validate, and an error for each that does not."""
    from registry.errors import InvalidNameError, InvalidTeamError, UnknownTeamError
    from registry.teams import load_team, scan_teams

    if not names:
        scan = scan_teams(folder)
        return scan.teams, list(scan.errors)
    teams: list[Team] = []
    errors: list[RegistryError] = []
    for name in dict.fromkeys(names):
        try:
            teams.append(load_team(name, folder))
        except (InvalidTeamError, UnknownTeamError, InvalidNameError) as exc:
            errors.append(exc)
    return teams, errors


def _error_doc(errors: list[RegistryError], **rest: Any) -> dict[str, Any]:
    """The one JSON document of a command that did the good teams and refused the bad files."""
    files = [
        {"file": str(getattr(e, "path", None) or ""), "error": type(e).__name__, "message": str(e)} for e in errors
    ]
    message = f"{len(errors)} team(s) refused:\n" + "\n".join(str(e) for e in errors)
    return {"error": type(errors[0]).__name__, "message": message, "exit_code": EXIT_USAGE, "files": files, **rest}


def _print_errors(errors: list[RegistryError], out: Any = console) -> None:
    for e in errors:
        out.print(f"[red]refused[/] {esc(e)}", highlight=False)
    if errors:
        out.print(f"[red]{len(errors)} team(s) refused[/]; the other teams were processed", highlight=False)


def _version(uri: str | None) -> str:
    """``models:/cnnselect-digits/5`` as ``v5`` (the champion column names the model)."""
    return f"v{uri.rsplit('/', 1)[-1]}" if uri else "-"


def cmd_report(args: argparse.Namespace) -> int:
    """Teams from ``--teams DIR`` (default: the packaged teams), one HTML page, pictures logged to MLflow."""
    from pathlib import Path

    from cnnselect import report
    from registry.client import Registry
    from registry.errors import RegistryError
    from registry.settings import Settings

    out = err_console if args.json else console
    teams, errors = _teams(args.team, args.teams)
    if args.team and not teams:  # every team asked for is unknown or bad: a usage error, as for one team
        raise errors[0]
    settings = Settings()
    reg = Registry(settings=settings, teams_dir=args.teams)
    promoted: dict[str, str | None] = {}
    for t in teams:
        try:
            promoted[t.name] = reg.get_champion(t.name).uri
        except RegistryError:
            promoted[t.name] = None
    invalid = [(str(getattr(e, "path", None) or ""), str(e)) for e in errors]
    with err_console.status("judging teams and drawing the pictures"):
        rep = report.build(
            reg, [(t.name, t.constraints) for t in teams], Path(args.out), args.dataset or (), promoted, invalid
        )
    runs = {} if args.no_mlflow else report.log_to_mlflow(settings, rep)
    if args.json:
        doc = {**rep.to_dict(), "mlflow_runs": runs}
        print(json.dumps(_error_doc(errors, **doc) if errors else doc, default=str))
    else:
        table = Table(title=Text(f"Report: {rep.html}"), title_justify="left")
        for col in ("team", "target", "champion", "feasible", "rejected", "promoted"):
            table.add_column(col, overflow="fold")
        for s in rep.teams:
            champ = Text(f"{s.champion.candidate.variant} v{s.champion.candidate.version}") if s.champion else None
            cells = [Text(s.name), Text(s.constraints.target), champ or Text("none", style="red"),
                     Text(str(len(s.feasible))), Text(str(len(s.rejected))), Text(_version(s.promoted))]  # fmt: skip
            table.add_row(*cells)
        out.print(table)
        _print_errors(errors, out)
        for dataset, run_id in runs.items():
            out.print(f"logged to MLflow: experiment {esc(report.reports_experiment_name(dataset))}, run {esc(run_id)}")
        out.print(f"open file://{esc(rep.html.resolve())}")
    if errors:
        return EXIT_USAGE
    return EXIT_OK if rep.views else EXIT_NOTHING  # a team without a champion is in the page, not a failure


def cmd_promote(args: argparse.Namespace) -> int:
    from registry.client import Registry
    from registry.promotion import promote

    reg = Registry(teams_dir=args.teams_dir)
    teams, errors = _teams(args.team, args.teams_dir)
    decisions = [promote(t, reg, sweep="cli") for t in teams]
    if args.json:
        found = [d.as_dict() for d in decisions]
        print(json.dumps(_error_doc(errors, decisions=found) if errors else found, default=str))
        return EXIT_USAGE if errors else EXIT_OK
    for i, d in enumerate(decisions):
        if i:
            console.print()  # a blank line between teams: one block each
        head, *rest = d.describe()
        style = {"promoted": "bold green", "kept": "bold", "none": "bold yellow"}[d.action]
        console.print(Text(head, style=style))
        for line in rest:
            indent = " " * (len(line) - len(line.lstrip()) + 2)
            for part in wrap(line, console.width, indent):
                console.print(Text(part), overflow="fold")
    _print_errors(errors)
    return EXIT_USAGE if errors else EXIT_OK


def cmd_teams(args: argparse.Namespace) -> int:
    from registry.teams import scan_teams

    scan = scan_teams(args.teams_dir)  # every file; each error names the file, the key and what is valid
    errors: list[RegistryError] = list(scan.errors)
    if args.json:
        found = [t.model_dump(mode="json") for t in scan.teams]
        print(json.dumps(_error_doc(errors, teams=found) if errors else found))
    else:
        for t in scan.teams:
            about = f": {esc(t.description)}" if t.description else ""
            console.print(f"[green]ok[/] {esc(t.name)}{about}", highlight=False)
        for e in errors:
            console.print(f"[red]invalid[/] {esc(e)}", highlight=False)
        if errors:
            console.print(f"[red]{len(errors)} of {len(errors) + len(scan.teams)} team files do not validate[/]")
    return EXIT_USAGE if errors else EXIT_OK
