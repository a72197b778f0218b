"""``cnnselect report``: one static HTML page per store, a section per team, and the pictures logged to MLflow.

For each team: its constraints, the champion (what ``get_best`` answers now, and the promoted alias when given), the
feasible set ranked, the Pareto frontier of its target runner, and every rejection with its reason. Then each
model's runtime/precision frontier on each measuring host (:mod:`cnnselect.frontier`). Then, per
dataset and runner, top-1 against p95 latency, params and MB. Images are PNGs beside ``index.html`` and embedded in
it (base64), so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnselect.frontier import Artifact, runtime_frontiers
from cnnselect.plots import frontier_names, plot_tradeoffs, points_of, points_of_verdicts
from registry import names
from registry.constraints import Constraints
from registry.errors import NoCandidatesError, NoFeasibleModelError
from registry.hosts import host_pool, select
from registry.selection import Candidate, Verdict, rank

# On evaluation runs, per team: feasible-champion | feasible | marginal | infeasible (LIKE 'feasible%' = usable)
TEAM_TAG_PREFIX = "cnnselect.team."
CHAMPION_VALUE = "feasible-champion"
REPORT_KEY_TAG = "cnnselect.report_key"


def reports_experiment_name(dataset: str) -> str:
    return f"{names.experiment_name(dataset)}/reports"


def team_tag(team: str) -> str:
    return TEAM_TAG_PREFIX + names.validate_name("team", team)


@dataclass
class TeamSection:
    name: str
    constraints: Constraints
    verdicts: list[Verdict] = field(default_factory=list)  # ranked: feasible first (the champion leads), then others
    champion: Verdict | None = None
    error: str | None = None  # NoCandidatesError / NoFeasibleModelError message
    promoted: str | None = None  # the alias-promoted champion's URI, when the caller knows it
    frontier: list[str] = field(default_factory=list)
    plot: Path | None = None

    @property
    def feasible(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.label == "feasible"]

    @property
    def rejected(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.label != "feasible"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.name,
            "constraints": self.constraints.model_dump(exclude_none=True),
            "champion": self.champion.candidate.uri if self.champion else None,
            "champion_variant": self.champion.candidate.variant if self.champion else None,
            "promoted": self.promoted,
            "error": self.error,
            "feasible": [v.candidate.variant for v in self.feasible],
            "rejected": {f"{v.candidate.variant} v{v.candidate.version}": reason(v) for v in self.rejected},
            "frontier": self.frontier,
            "plot": str(self.plot) if self.plot else None,
        }


@dataclass
class RunnerView:
    dataset: str
    runner: str
    candidates: list[Candidate]
    frontier: list[str]
    plot: Path


@dataclass
class Report:
    html: Path
    teams: list[TeamSection]
    views: list[RunnerView]
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of each team file left out
    # dataset -> host id -> model -> its artifacts there, fastest first (cnnselect.frontier)
    frontiers: dict[str, dict[str, dict[str, list[Artifact]]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "teams": [t.to_dict() for t in self.teams],
            "invalid_team_files": [{"file": f, "message": why} for f, why in self.invalid],
            "views": [
                {"dataset": v.dataset, "runner": v.runner, "frontier": v.frontier, "plot": str(v.plot)}
                for v in self.views
            ],
            "runtime_frontiers": {
                d: {h: {m: [a.to_dict() for a in arts] for m, arts in models.items()} for h, models in hosts.items()}
                for d, hosts in self.frontiers.items()
            },
        }


def reason(v: Verdict) -> str:
    """Why a candidate is not feasible, one clause per failed check."""
    text = "; ".join(c.describe() for c in v.failed) or "no failed check"
    if v.label == "marginal":
        text += " (point estimate passes; its confidence bound does not)"
    return text


def judge_team(name: str, k: Constraints, candidates: Sequence[Candidate]) -> TeamSection:
    """The team's verdicts among ``candidates`` (one dataset), the way ``get_best`` would decide."""
    section = TeamSection(name, k)
    try:
        best, verdicts = select(candidates, k)
        section.champion = best
    except NoFeasibleModelError as exc:
        section.error = str(exc)
        verdicts = _judge_all(candidates, k)
    except NoCandidatesError as exc:
        section.error = str(exc)
        verdicts = []
    ranked = rank(verdicts, k)
    section.verdicts = [v for v in ranked if v.label == "feasible"] + [v for v in ranked if v.label != "feasible"]
    section.frontier = frontier_names(points_of_verdicts(section.verdicts, None), k.latency_metric)
    return section


def _judge_all(candidates: Sequence[Candidate], k: Constraints) -> list[Verdict]:
    """Every verdict ``get_best`` would weigh: the target's candidates at the team's operating point.

    A host target weighs every runtime's, on its machine.
    """
    from registry.selection import at_operating_point, judge

    return [judge(c, k) for c in (host_pool(candidates, k) if k.on_host else at_operating_point(candidates, k))]


def build(
    registry: Any,
    teams: Sequence[tuple[str, Constraints]],
    out_dir: Path,
    datasets: Sequence[str] = (),
    promoted: dict[str, str | None] | None = None,
    invalid: Sequence[tuple[str, str]] = (),
) -> Report:
    """Judge every team, draw every picture, write ``out_dir/index.html``; reads the store once per dataset.

    ``invalid``: (file, why) of each team file that did not validate; the page lists them above the teams.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys([*datasets, *(k.dataset for _, k in teams)]))
    pool: dict[str, list[Candidate]] = {d: registry.candidates(d) for d in wanted}
    sections = []
    for name, k in teams:
        s = judge_team(name, k, pool[k.dataset])
        s.promoted = (promoted or {}).get(name)
        champion = s.champion.candidate.version if s.champion else None
        s.plot = plot_tradeoffs(
            points_of_verdicts(s.verdicts, champion),
            f"team {name}: {k.dataset} on {k.target} (green feasible, orange marginal, grey rejected, star champion)",
            out_dir / f"team-{names.validate_name('team', name)}.png",
            k,
        )
        sections.append(s)
    views = []
    for d in wanted:
        for runner in sorted({c.runner for c in pool[d]}):
            cands = sorted((c for c in pool[d] if c.runner == runner), key=lambda c: (c.variant, int(c.version)))
            pts = points_of(cands)
            plot = plot_tradeoffs(pts, f"{d} on {runner}: top-1 against cost", out_dir / f"{d}-{runner}.png")
            views.append(RunnerView(d, runner, cands, frontier_names(pts), plot))
    frontiers = {d: runtime_frontiers(pool[d]) for d in wanted}
    page = out_dir / "index.html"
    page.write_text(render(sections, views, wanted, invalid, frontiers), encoding="utf-8")
    return Report(page, sections, views, list(invalid), frontiers)


def _img(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _num(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _row(cells: Sequence[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _metrics_row(c: Candidate, k: Constraints | None = None) -> list[str]:
    lat = k.latency_metric if k else "latency_p95_ms"
    m = c.metrics
    return [
        html.escape(c.variant),
        html.escape(f"v{c.version}"),
        _num(m.get("top1")),
        _num(m.get(lat), ".2f"),
        _num(m.get("params_m"), ".2f"),
        _num(m.get("size_mb"), ".2f"),
    ]


_HEAD = ["model", "version", "top-1", "p95 ms", "params M", "MB"]
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:0} h2{border-bottom:2px solid #4575b4;padding-bottom:4px;margin-top:40px}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}
th{background:#f0f3f8;text-align:left} .champion{background:#e6f4ea;padding:10px 14px;border-left:5px solid #1a9850}
.none{background:#fdecea;padding:10px 14px;border-left:5px solid #d73027;white-space:pre-wrap}
.reason{color:#8a1c1c} img{max-width:100%;border:1px solid #eee} code{background:#f4f4f4;padding:1px 4px}
"""


def _team_html(s: TeamSection) -> str:
    k = s.constraints
    head = [_HEAD[0], _HEAD[1], _HEAD[2], f"p{k.latency_percentile} ms", *_HEAD[4:]]
    declared = k.model_dump(exclude_none=True)
    parts = [f'<h2 id="team-{html.escape(s.name)}">Team {html.escape(s.name)}</h2>', "<h3>Constraints</h3><table>"]
    parts.append(_row([html.escape(key) for key in declared], "th"))
    parts.append(_row([html.escape(str(val)) for val in declared.values()]))
    parts.append("</table><h3>Champion</h3>")
    if s.champion:
        c = s.champion.candidate
        parts.append(
            f'<div class="champion"><b>{html.escape(c.variant)}</b> <code>{html.escape(c.uri)}</code> '
            f"top-1 {_num(c.metrics.get('top1'))}, {k.latency_metric} {_num(c.metrics.get(k.latency_metric), '.2f')} "
            f"ms, {_num(c.metrics.get('size_mb'), '.2f')} MB</div>"
        )
    else:
        parts.append(f'<div class="none">no champion: {html.escape(s.error or "")}</div>')
    if s.promoted:
        parts.append(f"<p>promoted champion alias: <code>{html.escape(s.promoted)}</code></p>")
    parts.append(f"<h3>Feasible ({len(s.feasible)}), best first</h3><table>{_row(head, 'th')}")
    parts += [_row(_metrics_row(v.candidate, k)) for v in s.feasible]
    parts.append("</table>")
    parts.append(
        f"<h3>Pareto frontier on {html.escape(k.target)}</h3><p>{html.escape(', '.join(s.frontier) or '-')}</p>"
    )
    parts.append(_img(s.plot))
    parts.append(f"<h3>Rejected ({len(s.rejected)})</h3><table>{_row([*head, 'label', 'reason'], 'th')}")
    parts += [
        _row([*_metrics_row(v.candidate, k), v.label, f'<span class="reason">{html.escape(reason(v))}</span>'])
        for v in s.rejected
    ]
    parts.append("</table>")
    return "\n".join(parts)


def _frontier_html(dataset: str, hosts: dict[str, dict[str, list[Artifact]]]) -> list[str]:
    """Per host, every model's artifacts there, fastest first, the ones on its runtime frontier marked."""
    parts = []
    head = ["model", "runtime", "precision", "threads", "top-1", "p95 ms", "MB", "frontier"]
    for host, models in hosts.items():
        parts.append(f"<h3>{html.escape(dataset)} on host <code>{html.escape(host)}</code></h3>")
        parts.append(f"<table>{_row(head, 'th')}")
        for variant, arts in models.items():
            for i, a in enumerate(arts):
                c = a.candidate
                mark = ("fastest, " if a.fastest else "") + ("on the frontier" if a.on_frontier else "dominated")
                cells = [html.escape(variant) if i == 0 else "", html.escape(c.runner), html.escape(c.precision)]
                cells += [html.escape(c.threads), _num(a.top1), _num(a.p95_ms, ".2f")]
                cells += [_num(c.metrics.get("size_mb"), ".2f"), mark]
                parts.append(_row(cells))
        parts.append("</table>")
    return parts


def render(
    sections: Sequence[TeamSection],
    views: Sequence[RunnerView],
    datasets: Sequence[str],
    invalid: Sequence[tuple[str, str]] = (),
    frontiers: dict[str, dict[str, dict[str, list[Artifact]]]] | None = None,
) -> str:
    toc = " · ".join(f'<a href="#team-{html.escape(s.name)}">{html.escape(s.name)}</a>' for s in sections)
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnselect report</title>",
        f"<style>{_CSS}</style></head><body><h1>cnnselect report</h1>",
        f"<p>datasets: {html.escape(', '.join(datasets) or '-')}; teams: {toc or '-'}. Budgets are checked on "
        "confidence bounds (latency upper bound, top-1 lower bound); the plots show point estimates.</p>",
    ]
    if invalid:
        body.append(f"<h2>Team files left out ({len(invalid)})</h2>")
        body += [f'<div class="none"><b>{html.escape(f)}</b>\n{html.escape(why)}</div>' for f, why in invalid]
    body += [_team_html(s) for s in sections]
    if any((frontiers or {}).values()):
        body.append(
            "<h2>Runtime frontier per host</h2><p>Per machine and model, every runtime/precision measured there: "
            "on the frontier when no other artifact of the same model on that machine is both faster (p95) and at "
            "least as accurate.</p>"
        )
        for d, hosts in (frontiers or {}).items():
            body += _frontier_html(d, hosts)
    body.append("<h2>Per dataset and runner</h2>")
    for v in views:
        body.append(f"<h3>{html.escape(v.dataset)} on {html.escape(v.runner)} ({len(v.candidates)} models)</h3>")
        body.append(f"<p>Pareto frontier (top-1 vs p95 latency): {html.escape(', '.join(v.frontier) or '-')}</p>")
        body.append(_img(v.plot))
        body.append(f"<table>{_row(_HEAD, 'th')}" + "".join(_row(_metrics_row(c)) for c in v.candidates) + "</table>")
    if not views:
        body.append("<p>nothing measured yet: run <code>cnnselect evaluate</code>.</p>")
    body.append("</body></html>")
    return "\n".join(body)


def report_key(report: Report, dataset: str) -> str:
    """A digest of what the dataset's part of the report shows: same candidates and teams, same key (idempotent)."""
    spec = {
        "candidates": sorted(
            (c.version, sorted(c.metrics.items())) for v in report.views if v.dataset == dataset for c in v.candidates
        ),
        "teams": sorted(
            (t.name, t.constraints.model_dump_json()) for t in report.teams if t.constraints.dataset == dataset
        ),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def log_to_mlflow(settings: Any, report: Report) -> dict[str, str]:
    """Log the pictures and the page to MLflow, and tag each team's verdicts on the evaluation runs.

    Per dataset, one run in ``cnnselect/<dataset>/reports`` (skipped when the same content was logged before); on
    every judged evaluation run a ``cnnselect.team.<team>`` tag: feasible-champion | feasible | marginal | infeasible.
    Returns ``{dataset: run_id}``.
    """
    from registry import writes
    from registry.tracking import _client

    client = _client(settings)
    runs: dict[str, str] = {}
    for dataset in dict.fromkeys([*(v.dataset for v in report.views), *(t.constraints.dataset for t in report.teams)]):
        exp_id = writes.experiment(
            settings,
            client,
            reports_experiment_name(dataset),
            settings.artifact_location(dataset, "reports"),
            {names.TAG_DATASET: dataset},
        )
        teams = [t for t in report.teams if t.constraints.dataset == dataset and t.plot is not None]
        tags = {names.TAG_DATASET: dataset}
        tags |= {team_tag(t.name): t.champion.candidate.uri if t.champion else "none" for t in teams}
        plots = [v.plot for v in report.views if v.dataset == dataset] + [t.plot for t in teams if t.plot is not None]
        artifacts: list[tuple[Path, str | None]] = [*((p, "plots") for p in plots), (report.html, None)]
        key = (REPORT_KEY_TAG, report_key(report, dataset))
        runs[dataset] = writes.record_report(
            settings, client, exp_id, key, tags, artifacts, {"report.json": report.to_dict()}
        )
    verdicts: dict[str, dict[str, str]] = {}
    for t in report.teams:
        champion = t.champion.candidate.run_id if t.champion else None
        for verdict in t.verdicts:
            value = CHAMPION_VALUE if verdict.candidate.run_id == champion else verdict.label
            verdicts.setdefault(verdict.candidate.run_id, {})[team_tag(t.name)] = value
    writes.set_run_tags(settings, client, verdicts)
    return runs
