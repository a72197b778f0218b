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

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cnnselect import cli_data
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
from cnnselect.hints import dataset_hint, usage_message
from cnnselect.views import answer_view, esc, fmt, leaderboard_tables


def _print_leaderboard(rows: list[dict[str, Any]], dataset: str) -> None:
    if not rows:
        console.print(f"[yellow]nothing measured for dataset {esc(dataset)} yet[/]")
    for table in leaderboard_tables(rows, dataset, console.width):
        console.print(table)


def _print_answer(a: dict[str, Any]) -> None:
    for part in answer_view(a, console.width):
        console.print(part)


def _run_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from catalog import get_profile
    from cnnselect import jobs
    from cnnselect.progress import SweepProgress

    out = err_console if getattr(args, "json", False) else console  # --json: stdout is for the JSON document only
    data = jobs.prepare_data(args.dataset)
    out.print(
        f"dataset [bold]{esc(data['name'])}[/] at {esc(data['root'])}: {esc(data['counts'])} images, "
        f"digest {esc(data['digest'][:12])}"
    )
    for rel, why in sorted(data["quarantined"].items()):
        out.print(f"  [yellow]quarantined[/] {escape(rel)}: {escape(why)}")
    profile = get_profile(args.profile)
    if profile.image_size and args.weights != "finetune" and args.dataset:
        out.print(
            f"[yellow]note[/]: profile {profile.name!r} evaluates at {profile.image_size} px (a reduced setting made "
            "for the 8x8 digits), not at each model's own resolution; pretrained weights are measured right with "
            "--profile full (each model at timm's eval size; --models picks the models)"
        )
    models = jobs.plan(args.profile, args.models.split(",") if args.models else None)
    sweep = args.sweep or f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    runners = args.runners.split(",")
    out.print(f"sweep {esc(sweep)}: {len(models)} models x runners {esc(', '.join(runners))}")
    results: list[dict[str, Any]] = []
    epochs = get_profile(args.profile).epochs if args.weights in ("finetune", "transfer") else 0
    with SweepProgress(err_console, len(models), len(runners), epochs) as bars:
        for i, variant in enumerate(models, 1):
            t0 = time.perf_counter()
            progress = bars.model(i, len(models), variant)
            outs = jobs.evaluate_isolated(
                variant, args.profile, data["root"], runners, sweep, args.weights, progress=progress
            )
            bars.done()
            took = f"({time.perf_counter() - t0:.0f}s)"
            for (status, error), on in _outcome_groups(variant, outs).items():
                mark = {"ok": "[green]ok[/]", "skipped": "[yellow]skipped (already measured)[/]"}.get(
                    status, "[red]failed[/]"
                )
                out.print(f"[{i}/{len(models)}] {esc(variant)} on {esc(', '.join(on))}: {mark} {took}")
                if error:
                    out.print(f"    [red]{esc(error)}[/]")
            results.extend(outs)
    return data, results


def _outcome_groups(variant: str, outs: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Runners of one model by (status, error): a failure every runner shares (an unknown name) is said once."""
    groups: dict[tuple[str, str], list[str]] = {}
    for o in outs:
        error = (o.get("error") or "").replace(f"{variant} on {o['runner']} ", f"{variant} ", 1)
        groups.setdefault((o["status"], error if o["status"] == "failed" else ""), []).append(o["runner"])
    return groups


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnselect import jobs

    data, results = _run_sweep(args)
    if args.json:
        print(json.dumps({"dataset": data, "results": results}, default=str))
    else:
        _print_leaderboard(jobs.leaderboard(data["name"]), data["name"])
    return EXIT_OK if any(r["status"] in ("ok", "skipped") for r in results) else EXIT_NOTHING


def cmd_demo(args: argparse.Namespace) -> int:
    from cnnselect import jobs
    from registry.settings import Settings

    t0 = time.perf_counter()
    data, results = _run_sweep(args)
    _print_leaderboard(jobs.leaderboard(data["name"]), data["name"])
    for label, k in jobs.EXAMPLES.items():
        a = jobs.answer({**k, "dataset": data["name"]})
        console.rule(esc(f"registry.get_best({label})"))
        _print_answer(a)
    s = Settings()
    console.rule("next")
    console.print(
        f"main job took {time.perf_counter() - t0:.0f}s; {sum(r['status'] == 'ok' for r in results)} runs logged"
    )
    console.print(f"MLflow store: {esc(s.resolved_tracking_uri)}")
    if s.is_local_store:
        console.print(
            f"open the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {esc(s.resolved_tracking_uri)} --port 5000"
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
        "threads",
        "host",
        "precision",
    )
    k = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    for key in ("families", "runtimes", "precisions"):
        if getattr(args, key):
            k[key] = tuple(getattr(args, key).split(","))
    return k


def cmd_best(args: argparse.Namespace) -> int:
    from cnnselect import jobs
    from registry.constraints import Constraints
    from registry.settings import Settings

    if args.team:
        from registry.teams import load_team

        inline = _constraints_from(args)
        if inline:
            raise ValueError(f"--team {args.team} takes its constraints from the team file; drop {sorted(inline)}")
        constraints = load_team(args.team, args.teams_dir).constraints.model_dump(exclude_none=True)
    else:
        constraints = _constraints_from(args)
    Constraints(**constraints)  # a wrong flag is a usage error, on a fresh home too
    Settings().require_store()
    a = jobs.answer(constraints)
    if a.get("error") == "NoCandidatesError":
        hint, known = dataset_hint(a["constraints"]["dataset"])
        if hint:
            a.update(message=f"{a['message']}. {hint}", datasets=known)
    if args.json:
        print(json.dumps(a, default=str))
    else:
        _print_answer(a)
    return EXIT_INFEASIBLE if "error" in a else EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from cnnselect import jobs

    rows = jobs.leaderboard(args.dataset)
    if not rows:
        hint, known = dataset_hint(args.dataset)
        msg = hint or f"nothing measured for dataset {args.dataset!r}"
        if args.json:
            print(json.dumps({"error": "NothingMeasured", "message": msg, "datasets": known}))
        else:
            console.print(f"[yellow]{esc(msg)}[/]")
        return EXIT_NOTHING
    if args.json:
        print(json.dumps(rows))
    else:
        _print_leaderboard(rows, args.dataset)
    return EXIT_OK


def cmd_add_cards(args: argparse.Namespace) -> int:
    from registry.cards import add_cards, prune_tags
    from registry.settings import Settings

    settings = Settings()
    n = add_cards(settings, args.dataset)
    pruned = prune_tags(settings, args.dataset) if args.prune else 0
    if args.json:
        print(json.dumps({"dataset": args.dataset, "cards_written": n, "tags_deleted": pruned}))
    else:
        console.print(f"{n} card(s) written on {esc(args.dataset)}'s versions, {pruned} old tag(s) deleted")
    return EXIT_OK


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
        cells = [
            e.name,
            e.family.value,
            str(e.input_size),
            fmt(p and p.params_m, ".2f"),
            fmt(p and p.gmacs, ".2f"),
            fmt(p and p.top1, ".2f"),
            ",".join(sorted(d.value for d in e.deployments)),
        ]
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from catalog import Family, list_profiles
    from evaluators.runners import HOSTS, RUNNER_NAMES

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
            "--weights",
            default="finetune",
            help="finetune (from scratch) | transfer (pretrained backbone, new head) | timm-hub (pretrained, ImageNet "
            "head) | scratch | file:<path or MLflow URI>",
        )
        sp.add_argument("--sweep", help="sweep id (default: a new one); reusing one resumes it")
        sp.add_argument("--json", action="store_true")

    sweep_args(sub.add_parser("demo", help="the main job on the embedded default, then two get_best answers"))
    sweep_args(sub.add_parser("evaluate", help="evaluate a profile on a dataset and log to MLflow"))
    b = sub.add_parser("best", help="registry.get_best for a team (--team) or inline constraints")
    b.add_argument("--team", help="a team's name: its file's constraints (see `cnnselect teams validate`)")
    b.add_argument("--teams-dir", help="folder of team YAML files (default: CNNSELECT_TEAMS_DIR or the packaged ones)")
    b.add_argument(
        "--target",
        help=f"runner, of {', '.join(RUNNER_NAMES)} (default cpu); or a host kind, {', '.join(HOSTS)}: every runtime "
        "measured on one machine of it",
    )
    b.add_argument("--runtimes", help="host target: comma-separated runners allowed (default: every one of the host)")
    b.add_argument("--host", help="host id the measurements ran on (default: the latest measured)")
    b.add_argument("--precision", help="the precision deployed (default: the runner's; a host target: any)")
    b.add_argument("--precisions", help="comma-separated precisions allowed, e.g. fp32,int8")
    b.add_argument("--dataset", help="default digits")
    for flag in ("max-latency-ms", "max-params-m", "max-size-mb", "max-gmacs", "min-top1"):
        b.add_argument(f"--{flag}", type=float)
    b.add_argument("--latency-percentile", type=int, choices=(50, 90, 95, 99))
    b.add_argument("--threads", type=int, help="intra-op threads the measurement ran with (default: any)")
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
        help="write each version's card tag from its run (versions registered before this card format, cards edited by "
        "hand)",
    )
    ac.add_argument("--dataset", default="digits")
    ac.add_argument(
        "--prune", action="store_true", help="also delete the tags versions no longer carry (cnnselect.metric.*, ...)"
    )
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
    cli_data.add_parser(sub)
    add_runners_parser(sub)
    return p


READS_THE_STORE = ("leaderboard", "add-cards", "report", "promote")  # and best, once its flags validate
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
    "data": cli_data.cmd_data,
    "runners": cmd_runners,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("mlflow", "alembic", "onnxruntime", "torch", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not args.verbose:  # the sweep prints each failure itself, once; the pipeline's log of it would repeat it
        logging.getLogger("cnnselect.pipeline").setLevel(logging.CRITICAL)
    from pydantic import ValidationError

    from catalog import UnknownNameError
    from registry.errors import (
        InvalidNameError,
        NoCandidatesError,
        NoFeasibleModelError,
        NothingMeasuredError,
        RegistryError,
    )
    from registry.retry import TrackingStoreBusyError, TrackingUnavailableError
    from registry.settings import Settings

    usage = (ValidationError, UnknownNameError, InvalidNameError, ValueError, KeyError, RegistryError)
    try:
        if args.command in READS_THE_STORE:
            Settings().require_store()  # a fresh home: say what to run, and leave no empty mlflow.db behind
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return _fail(args, "Interrupted", "interrupted", EXIT_INTERRUPTED)
    except NothingMeasuredError as exc:
        return _fail(args, type(exc).__name__, str(exc), EXIT_NOTHING)
    except (NoCandidatesError, NoFeasibleModelError) as exc:
        return _fail(args, type(exc).__name__, str(exc), EXIT_INFEASIBLE)
    except (TrackingUnavailableError, TrackingStoreBusyError) as exc:  # after bounded retries
        return _fail(args, type(exc).__name__, str(exc), EXIT_STORE)
    except usage as exc:
        return _fail(args, type(exc).__name__, usage_message(exc), EXIT_USAGE)
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
        console.print(f"[red]error:[/] {esc(message)}", highlight=False)
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
