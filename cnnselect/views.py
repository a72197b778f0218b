"""How the command line lays out what it prints: tables that read at 80 columns, every computed string escaped.

Rich reads ``[word]`` as markup and drops it, so a computed string never reaches ``console.print`` as markup: table
cells are ``Text`` (never parsed) and f-strings pass their values through :func:`esc`. Model names are never cut:
their column is as wide as the longest name, and lower-value columns are left out (and named) when the terminal is
too narrow for all of them. Explanations are pre-wrapped between figures, never inside one (``≥ 0.878``,
``(margin +9.8%)``).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

BUDGETS: tuple[str, ...] = ("max_latency_ms", "max_params_m", "max_size_mb", "max_gmacs", "max_peak_memory_mb")
BUDGETS += ("min_top1", "max_top1_drop", "families", "precisions")
# (header, row key, format); the leaderboard leaves columns out from the end of DROP_ORDER first
LEADERBOARD_COLUMNS = (
    ("top-1", "top1", ".3f"),
    ("p95 ms", "latency_p95_ms", ".2f"),
    ("size MB", "size_mb", ".2f"),
    ("params M", "params_m", ".2f"),
    ("GMACs", "gmacs", ".4f"),
)
DROP_ORDER = ("GMACs", "params M", "size MB")
_KEEP_TOGETHER = re.compile(r"\(margin [^)]*\)|[≥≤] \S+|point \S+|(?:meets|fails) \S+|\d+% (?:lower|upper)")


def esc(value: object) -> str:
    """A computed value, safe inside rich markup (``[feasible]`` stays ``[feasible]``)."""
    return escape(str(value))


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def table_width(widths: Sequence[int]) -> int:
    """What a boxed rich table with the default padding takes for columns of these content widths."""
    return sum(widths) + 3 * len(widths) + 1


def wrap(text: str, width: int, indent: str = "  ") -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken between figures, never inside one."""
    protected = _KEEP_TOGETHER.sub(lambda m: m.group(0).replace(" ", "\0"), text)
    lines = textwrap.wrap(
        protected, width=max(width, 10), subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
    return [line.replace("\0", " ") for line in lines] or [""]


def leaderboard_tables(rows: list[dict[str, Any]], dataset: str, width: int) -> list[Table | Text]:
    """One table per runner/precision of the dataset, best top-1 first, fitted to ``width`` columns; then notes."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r['runner']}/{r['precision']}", []).append(r)
    model_w = max([len("model"), *(len(r["variant"]) for r in rows)])
    cells = {h: [fmt(r[key], spec) for r in rows] for h, key, spec in LEADERBOARD_COLUMNS}
    widths = {h: max([len(h), *(len(c) for c in cells[h])]) for h, _, _ in LEADERBOARD_COLUMNS}
    shown = [c for c in LEADERBOARD_COLUMNS]
    dropped: list[str] = []
    for header in DROP_ORDER:
        if table_width([model_w, *(widths[h] for h, _, _ in shown)]) <= width:
            break
        shown = [c for c in shown if c[0] != header]
        dropped.append(header)
    tables: list[Table | Text] = []
    for point, members in groups.items():
        table = Table(title=Text(f"Leaderboard: {dataset} on {point}"), title_justify="left")
        table.add_column("model", width=model_w, no_wrap=True, overflow="fold")
        for header, _, _ in shown:
            table.add_column(header, justify="right", no_wrap=True)
        for r in members:
            table.add_row(Text(r["variant"]), *(Text(fmt(r[key], spec)) for _, key, spec in shown))
        tables.append(table)
    tables += frontier_tables(rows, dataset, model_w)
    tables.append(Text("top-1 on the held-out split; latency at batch 1"))
    if dropped:
        tables.append(
            Text(f"left out at {width} columns: {', '.join(dropped)} (--json or a wider terminal shows them)")
        )
    return tables


def frontier_tables(rows: list[dict[str, Any]], dataset: str, model_w: int) -> list[Table | Text]:
    """Per host: each model's runtime/precision frontier (the artifacts no other one of it beats there), fastest first.

    Only where a model was measured on more than one runtime of a host; the artifacts off the frontier are counted.
    """
    hosts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        if r.get("on_frontier") is not None:
            hosts.setdefault(r["host"], {}).setdefault(r["variant"], []).append(r)
    out: list[Table | Text] = []
    for host, models in sorted(hosts.items()):
        if all(len(arts) < 2 for arts in models.values()):
            continue
        title = f"Runtime frontier: {dataset} on host {host} (per model, fastest first)"
        out.append(Text(title))  # above the table, not its title: a title wraps at the (narrow) table's width
        table = Table()
        table.add_column("model", width=model_w, no_wrap=True, overflow="fold")
        table.add_column("runtime, threads", overflow="fold")
        for header in ("top-1", "p95 ms"):
            table.add_column(header, justify="right", no_wrap=True)
        off = 0
        for variant, arts in sorted(models.items()):
            front = sorted((a for a in arts if a["on_frontier"]), key=lambda a: a["latency_p95_ms"] or float("inf"))
            off += len(arts) - len(front)
            for i, a in enumerate(front):
                table.add_row(
                    Text(variant if i == 0 else ""),
                    Text(f"{a['runner']}, {a['threads']}"),
                    Text(fmt(a["top1"], ".3f")),
                    Text(fmt(a["latency_p95_ms"], ".2f")),
                )
        out.append(table)
        if off:
            out.append(Text(f"{off} measured artifact(s) on this host are off the frontier (--json lists them)"))
    return out


def declared(constraints: dict[str, Any]) -> str:
    """The budgets a constraint set declares, for a title: ``max_latency_ms 5, min_top1 0.8``."""
    parts = []
    for key in BUDGETS:
        v = constraints.get(key)
        if v is not None:
            parts.append(f"{key} {','.join(v) if isinstance(v, list | tuple) else format(v, 'g')}")
    return ", ".join(parts) or "no budget"


def verdict_table(title: str, verdicts: list[dict[str, Any]], width: int, runtimes: bool = False) -> Table:
    """One row per judged candidate: name and version (never cut), its label, and each deciding check on its line.

    ``runtimes``: a host target's candidates, each named with the runtime it was measured on. Narrow terminals get
    the label under the name instead of in a column of its own, so the checks keep the room.
    """
    names = [f"{v['variant']} v{v['version']}" + (f" {v['runtime']}" if runtimes else "") for v in verdicts]
    model_w = max([len("model"), *(len(n) for n in names)])
    label_w = max([len("verdict"), *(len(v["label"]) for v in verdicts)])
    split = width - table_width([model_w, label_w, 0]) >= 50  # a verdict column only where the checks keep 50
    why_w = width - (table_width([model_w, label_w, 0]) if split else table_width([model_w, 0]))
    table = Table(title=Text(title), title_justify="left", show_lines=True)
    if why_w < 40:  # long names on a narrow terminal: each name on a line of its own, its checks below at full width
        table.add_column("model, verdict: why", overflow="fold")
        for name, v in zip(names, verdicts, strict=True):
            lines = [f"  {line}" for check in v["checks"] for line in wrap(check, width - table_width([0]) - 2)]
            style = "bold green" if v["label"] == "chosen" else ""
            table.add_row(Text.assemble((name, "bold"), " ", (v["label"], style), "\n", "\n".join(lines)))
        return table
    table.add_column("model" if split else "model / verdict", width=model_w, no_wrap=True, overflow="fold")
    if split:
        table.add_column("verdict", no_wrap=True)
    table.add_column("why", overflow="fold")
    for name, v in zip(names, verdicts, strict=True):
        why = Text("\n".join(line for check in v["checks"] for line in wrap(check, why_w)))
        label = Text(v["label"], style="bold green" if v["label"] == "chosen" else "")
        if split:
            table.add_row(Text(name), label, why)
        else:
            table.add_row(Text.assemble(name, "\n", label), why)
    return table


def answer_view(a: dict[str, Any], width: int) -> list[Any]:
    """What ``best`` and ``demo`` print for one ``jobs.answer``: the answer's line, then its table."""
    k, on_host = a["constraints"], bool(a.get("on_host"))
    target = k["target"] + (f" ({', '.join(k['runtimes'])})" if k.get("runtimes") else "")
    title = f"get_best on {k['dataset']}, target {target}: {declared(k)}"
    if "error" in a:
        head = f"[red]{esc(a['error'])}[/]: " + (
            "no measured model satisfies every constraint; the nearest misses:"
            if a.get("nearest")
            else esc(a["message"])
        )
        return [head, *([verdict_table(title, a["nearest"], width, on_host)] if a.get("nearest") else [])]
    head = f"[bold green]{esc(a['variant'])}[/] {esc(a['uri'])}"
    runs = f"runtime [bold]{esc(a['runtime'])}[/], precision {esc(a['precision'])}, threads {esc(a['threads'])}"
    runs += f", host {esc(a['host'] or '-')}"
    return [head, runs, verdict_table(title, a["verdicts"], width, on_host)]
