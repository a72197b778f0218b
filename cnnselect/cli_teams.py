"""The team commands of ``cnnselect``: ``report``, ``promote`` and ``teams validate``."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from cnnselect.console import EXIT_NOTHING, EXIT_OK, console, err_console


def cmd_report(args: argparse.Namespace) -> int:
    """Teams from ``--teams DIR`` (default: the packaged teams), one HTML page, pictures logged to MLflow."""
    from pathlib import Path

    from cnnselect import report
    from registry.client import Registry
    from registry.errors import RegistryError
    from registry.settings import Settings
    from registry.teams import list_teams, load_team

    out = err_console if args.json else console
    teams = [load_team(t, args.teams) for t in args.team] if args.team else list_teams(args.teams)
    settings = Settings()
    reg = Registry(settings=settings, teams_dir=args.teams)
    promoted: dict[str, str | None] = {}
    for t in teams:
        try:
            promoted[t.name] = reg.get_champion(t.name).uri
        except RegistryError:
            promoted[t.name] = None
    with err_console.status("judging teams and drawing the pictures"):
        rep = report.build(reg, [(t.name, t.constraints) for t in teams], Path(args.out), args.dataset or (), promoted)
    runs = {} if args.no_mlflow else report.log_to_mlflow(settings, rep)
    if args.json:
        print(json.dumps({**rep.to_dict(), "mlflow_runs": runs}, default=str))
    else:
        table = Table(title=f"Report: {rep.html}")
        for col in ("team", "target", "champion", "feasible", "rejected", "promoted"):
            table.add_column(col)
        for s in rep.teams:
            champ = f"{s.champion.candidate.variant} {s.champion.candidate.uri}" if s.champion else "[red]none[/]"
            table.add_row(s.name, s.constraints.target, champ, str(len(s.feasible)), str(len(s.rejected)),
                          s.promoted or "-")  # fmt: skip
        out.print(table)
        for dataset, run_id in runs.items():
            out.print(f"logged to MLflow: experiment {report.reports_experiment_name(dataset)}, run {run_id}")
        out.print(f"open file://{rep.html.resolve()}")
    return EXIT_OK if rep.views else EXIT_NOTHING  # a team without a champion is in the page, not a failure


def cmd_promote(args: argparse.Namespace) -> int:
    from registry.client import Registry
    from registry.promotion import promote
    from registry.teams import list_teams

    reg = Registry(teams_dir=args.teams_dir)
    teams = args.team or [t.name for t in list_teams(args.teams_dir)]
    decisions = [promote(t, reg, sweep="cli").as_dict() for t in teams]
    if args.json:
        print(json.dumps(decisions, default=str))
    for d in [] if args.json else decisions:
        console.print(f"[bold]{d['team']}[/]: {d['action']} v{d['champion'] or '-'} ({d['reason']})", highlight=False)
    return EXIT_OK


def cmd_teams(args: argparse.Namespace) -> int:
    from registry.teams import list_teams

    teams = list_teams(args.teams_dir)  # raises InvalidTeamError naming the file, the key and what is valid
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in teams]))
    else:
        for t in teams:
            console.print(f"[green]ok[/] {t.name}: {t.description}", highlight=False)
    return EXIT_OK
