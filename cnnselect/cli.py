"""``cnnselect``: the command line.

Exit codes: 0 ok, 1 nothing evaluated or nothing to show, 2 bad usage (the message lists what is valid), 3 no feasible
model, 4 the MLflow store could not be reached or refused the request, 130 interrupted. With ``--json`` stdout holds
exactly one JSON document (errors too: ``{"error": <type>, "message": ...}``); progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from typing import Any

from rich.table import Table

from cnnselect.cli_runners import add_runners_parser, cmd_runners
from cnnselect.cli_teams import cmd_promote, cmd_report, cmd_teams
from cnnselect.console import (
    EXIT_INFEASIBLE,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
    console,
    err_console,
)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _print_leaderboard(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Leaderboard (held-out digits; latency batch 1)")
    for col in ("model", "runner", "top-1", "p95 ms", "params M", "GMACs", "size MB"):
        table.add_column(col, justify="left" if col in ("model", "runner") else "right")
    for r in rows:
        table.add_row(
            r["variant"],
            f"{r['runner']}/{r['precision']}",
            _fmt(r["top1"]),
            _fmt(r["latency_p95_ms"], ".2f"),
            _fmt(r["params_m"], ".2f"),
            _fmt(r["gmacs"], ".4f"),
            _fmt(r["size_mb"], ".2f"),
        )
    console.print(table)


def _run_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from catalog import get_profile
    from cnnselect import jobs
    from cnnselect.progress import SweepProgress

    out = err_console if getattr(args, "json", False) else console  # --json: stdout is for the JSON document only
    data = jobs.prepare_data(args.dataset)
    out.print(
        f"dataset [bold]{data['name']}[/] at {data['root']}: {data['counts']} images, digest {data['digest'][:12]}"
    )
    models = jobs.plan(args.profile, args.models.split(",") if args.models else None)
    sweep = args.sweep or f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    runners = args.runners.split(",")
    out.print(f"sweep {sweep}: {len(models)} models x runners {runners}")
    results: list[dict[str, Any]] = []
    epochs = get_profile(args.profile).epochs if args.weights == "finetune" else 0
    with SweepProgress(err_console, len(models), len(runners), epochs) as bars:
        for i, variant in enumerate(models, 1):
            t0 = time.perf_counter()
            progress = bars.model(i, len(models), variant)
            outs = jobs.evaluate(variant, args.profile, data["root"], runners, sweep, args.weights, progress=progress)
            bars.done()
            for o in outs:
                mark = {"ok": "[green]ok[/]", "skipped": "[yellow]skipped (already measured)[/]"}.get(
                    o["status"], "[red]failed[/]"
                )
                out.print(f"[{i}/{len(models)}] {variant} on {o['runner']}: {mark} ({time.perf_counter() - t0:.0f}s)")
                if o["status"] == "failed":
                    out.print(f"    [red]{o['error']}[/]")
            results.extend(outs)
    return data, results


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnselect import jobs

    data, results = _run_sweep(args)
    if args.json:
        print(json.dumps({"dataset": data, "results": results}, default=str))
    else:
        _print_leaderboard(jobs.leaderboard(data["name"]))
    return EXIT_OK if any(r["status"] in ("ok", "skipped") for r in results) else EXIT_NOTHING


def cmd_demo(args: argparse.Namespace) -> int:
    from cnnselect import jobs
    from registry.settings import Settings

    t0 = time.perf_counter()
    data, results = _run_sweep(args)
    _print_leaderboard(jobs.leaderboard(data["name"]))
    for label, k in jobs.EXAMPLES.items():
        a = jobs.answer({**k, "dataset": data["name"]})
        console.rule(f"registry.get_best({label}: {k})")
        if "error" in a:
            console.print(f"[yellow]{a['error']}[/]: {a['message']}")
        else:
            console.print(f"[bold green]{a['variant']}[/] {a['uri']}\n{a['explanation']}")
    s = Settings()
    console.rule("next")
    console.print(
        f"main job took {time.perf_counter() - t0:.0f}s; {sum(r['status'] == 'ok' for r in results)} runs logged"
    )
    console.print(f"MLflow store: {s.resolved_tracking_uri}")
    if s.is_local_store:
        console.print(
            f"open the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {s.resolved_tracking_uri} --port 5000"
        )
    return EXIT_OK if any(r["status"] in ("ok", "skipped") for r in results) else EXIT_NOTHING


def _constraints_from(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "target",
        "dataset",
        "max_latency_ms",
        "latency_percentile",
        "max_params_m",
        "max_size_mb",
        "max_gmacs",
        "min_top1",
        "objective",
    )
    k = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.families:
        k["families"] = tuple(args.families.split(","))
    return k


def cmd_best(args: argparse.Namespace) -> int:
    from cnnselect import jobs

    if args.team:
        from registry.teams import load_team

        inline = _constraints_from(args)
        if inline:
            raise ValueError(f"--team {args.team} takes its constraints from the team file; drop {sorted(inline)}")
        constraints = load_team(args.team, args.teams_dir).constraints.model_dump(exclude_none=True)
    else:
        constraints = _constraints_from(args)
    a = jobs.answer(constraints)
    if args.json:
        print(json.dumps(a, default=str))
    elif "error" in a:
        console.print(f"[red]{a['error']}[/]: {a['message']}")
    else:
        console.print(f"[bold green]{a['variant']}[/] {a['uri']}\n{a['explanation']}")
    return EXIT_INFEASIBLE if "error" in a else EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from cnnselect import jobs

    rows = jobs.leaderboard(args.dataset)
    if not rows:
        known = _measured_datasets()
        msg = f"nothing measured for dataset {args.dataset!r}; datasets with measurements: {', '.join(known) or '-'}"
        if args.json:
            print(json.dumps({"error": "NothingMeasured", "message": msg, "datasets": known}))
        else:
            console.print(f"[yellow]{msg}[/]")
        return EXIT_NOTHING
    if args.json:
        print(json.dumps(rows))
    else:
        _print_leaderboard(rows)
    return EXIT_OK


def cmd_add_cards(args: argparse.Namespace) -> int:
    from registry.settings import Settings
    from registry.tracking import add_cards

    n = add_cards(Settings(), args.dataset)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "cards_written": n}))
    else:
        console.print(f"{n} card(s) written on {args.dataset}'s versions")
    return EXIT_OK


def _measured_datasets() -> list[str]:
    from mlflow import MlflowClient

    from registry.settings import Settings

    client = MlflowClient(Settings().resolved_tracking_uri)
    found = client.search_experiments(filter_string="name LIKE 'cnnselect/%'")
    return sorted(e.name.split("/", 1)[1] for e in found if e.name.count("/") == 1 and "promotions" not in e.name)


def cmd_catalog(args: argparse.Namespace) -> int:
    import catalog

    entries = catalog.list_entries(args.pattern, family=args.family)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "family": e.family.value,
                        "input_size": e.input_size,
                        "published": e.published.__dict__ if e.published else None,
                        "deployments": sorted(d.value for d in e.deployments),
                    }
                    for e in entries
                ]
            )
        )
        return EXIT_OK
    table = Table(title=f"Catalog ({len(entries)} entries)")
    for col in ("name", "family", "px", "params M", "GMACs", "top-1 %", "targets"):
        table.add_column(col)
    for e in entries:
        p = e.published
        table.add_row(
            e.name,
            e.family.value,
            str(e.input_size),
            _fmt(p and p.params_m, ".2f"),
            _fmt(p and p.gmacs, ".2f"),
            _fmt(p and p.top1, ".2f"),
            ",".join(sorted(d.value for d in e.deployments)),
        )
    console.print(table)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from catalog import Family, list_profiles
    from evaluators.runners import RUNNER_NAMES

    p = argparse.ArgumentParser(prog="cnnselect", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def sweep_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default="demo", choices=list_profiles())
        sp.add_argument("--models", help="comma-separated catalog names (overrides the profile's list)")
        sp.add_argument(
            "--dataset", help="an ImageFolder root with train/calibration/heldout (default: bundled digits)"
        )
        sp.add_argument("--runners", default="cpu,edge", help=f"comma-separated, of {', '.join(RUNNER_NAMES)}")
        sp.add_argument(
            "--weights", default="finetune", help="finetune | timm-hub | scratch | file:<path or MLflow URI>"
        )
        sp.add_argument("--sweep", help="sweep id (default: a new one); reusing one resumes it")
        sp.add_argument("--json", action="store_true")

    sweep_args(sub.add_parser("demo", help="the main job on the embedded default, then two get_best answers"))
    sweep_args(sub.add_parser("evaluate", help="evaluate a profile on a dataset and log to MLflow"))
    b = sub.add_parser("best", help="registry.get_best for a team (--team) or inline constraints")
    b.add_argument("--team", help="a team's name: its file's constraints (see `cnnselect teams validate`)")
    b.add_argument("--teams-dir", help="folder of team YAML files (default: CNNSELECT_TEAMS_DIR or the packaged ones)")
    b.add_argument("--target", help=f"runner, of {', '.join(RUNNER_NAMES)} (default cpu)")
    b.add_argument("--dataset", help="default digits")
    for flag in ("max-latency-ms", "max-params-m", "max-size-mb", "max-gmacs", "min-top1"):
        b.add_argument(f"--{flag}", type=float)
    b.add_argument("--latency-percentile", type=int, choices=(50, 90, 95, 99))
    b.add_argument("--families")
    b.add_argument("--objective", choices=("top1", "latency", "size"))
    b.add_argument("--json", action="store_true")
    lb = sub.add_parser("leaderboard", help="every measured model of a dataset")
    lb.add_argument("--dataset", default="digits")
    lb.add_argument("--json", action="store_true")
    rp = sub.add_parser("report", help="one static HTML page per team: champion, feasible set, frontier, rejections")
    rp.add_argument("--teams", help="folder of team YAML files (default: CNNSELECT_TEAMS_DIR or the packaged ones)")
    rp.add_argument("--team", action="append", help="only this team (repeatable; default: every team)")
    rp.add_argument("--dataset", action="append", help="also draw this dataset without a team (repeatable)")
    rp.add_argument("--out", default="cnnselect-report", help="output folder (index.html and PNGs)")
    rp.add_argument("--no-mlflow", action="store_true", help="do not log the pictures or team tags to MLflow")
    rp.add_argument("--json", action="store_true")
    pr = sub.add_parser("promote", help="move each team's alias to its winner (anti-flapping, recorded in MLflow)")
    pr.add_argument("team", nargs="*", help="team names (default: every team file)")
    pr.add_argument("--teams-dir", help="folder of team YAML files (default: CNNSELECT_TEAMS_DIR or the packaged ones)")
    pr.add_argument("--json", action="store_true")
    ac = sub.add_parser(
        "add-cards",
        help="write the card tag on versions registered before cards, and have cnnselect's table (PostgreSQL) rebuilt "
        "from the tags: after tags were edited by hand",
    )
    ac.add_argument("--dataset", default="digits")
    ac.add_argument("--json", action="store_true")
    tm = sub.add_parser("teams", help="team files")
    tm_sub = tm.add_subparsers(dest="teams_command", required=True)
    tv = tm_sub.add_parser("validate", help="validate every team file; errors say what would have been valid")
    tv.add_argument("--teams-dir", help="folder of team YAML files (default: CNNSELECT_TEAMS_DIR or the packaged ones)")
    tv.add_argument("--json", action="store_true")
    cat = sub.add_parser("catalog", help="the catalog")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    cl = cat_sub.add_parser("list")
    cl.add_argument("pattern", nargs="?", default="*")
    cl.add_argument("--family", choices=[f.value for f in Family])
    cl.add_argument("--json", action="store_true")
    add_runners_parser(sub)
    return p


COMMANDS = {
    "demo": cmd_demo,
    "evaluate": cmd_evaluate,
    "best": cmd_best,
    "leaderboard": cmd_leaderboard,
    "add-cards": cmd_add_cards,
    "catalog": cmd_catalog,
    "report": cmd_report,
    "promote": cmd_promote,
    "teams": cmd_teams,
    "runners": cmd_runners,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("mlflow", "alembic", "onnxruntime", "torch", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from pydantic import ValidationError

    from catalog import UnknownNameError
    from registry.errors import InvalidNameError, NoCandidatesError, NoFeasibleModelError, RegistryError
    from registry.retry import TrackingStoreBusyError, TrackingUnavailableError

    usage = (ValidationError, UnknownNameError, InvalidNameError, ValueError, KeyError, RegistryError)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return _fail(args, "Interrupted", "interrupted", EXIT_INTERRUPTED)
    except (NoCandidatesError, NoFeasibleModelError) as exc:
        return _fail(args, type(exc).__name__, str(exc), EXIT_INFEASIBLE)
    except (TrackingUnavailableError, TrackingStoreBusyError) as exc:  # after bounded retries
        return _fail(args, type(exc).__name__, str(exc), EXIT_STORE)
    except usage as exc:
        return _fail(args, type(exc).__name__, str(exc).strip('"'), EXIT_USAGE)
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        uri = _tracking_uri()
        return _fail(args, type(exc).__name__, f"MLflow store {uri} failed: {exc}", EXIT_STORE)


def _fail(args: argparse.Namespace, error: str, message: str, code: int) -> int:
    """One error, worded for people or (``--json``) as the only JSON document on stdout."""
    if getattr(args, "json", False):
        print(json.dumps({"error": error, "message": message, "exit_code": code}))
    else:
        console.print(f"[red]error:[/] {message}", highlight=False)
    return code


def _is_store_error(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, MlflowException | SQLAlchemyError | ConnectionError | TimeoutError)


def _tracking_uri() -> str:
    from registry.retry import redact
    from registry.settings import Settings

    return redact(Settings().resolved_tracking_uri)


if __name__ == "__main__":
    sys.exit(main())
