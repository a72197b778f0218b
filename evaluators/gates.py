"""Great Expectations gates, fail closed: held-out data before any model is evaluated, results before registration.

Each gate turns what it checks into a pandas DataFrame (one row per image, or one row per evaluated model, runner
and metric), validates it against an expectation suite in an ephemeral GX context and returns a :class:`GateResult`
holding the full GX validation result (JSON, logged as an MLflow artifact by the caller) and one line per failed
expectation. Nothing passes vacuously: a missing column, an empty table, a null or a non-finite value fails.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.data import DatasetManifest

DATA_SUITE = "cnnselect.heldout_data"
RESULTS_SUITE = "cnnselect.results"
ACCURACY_METRICS = ("top1", "top5", "top1_ci_low", "top1_ci_high")
LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")
_SHA256 = r"^[0-9a-f]{64}$"
RESULT_KEYS = ("variant", "runner", "metric")  # a results row's key, quoted in each failure


class GateError(ValueError):
    """A gate failed; ``result`` says which expectations, on what, and holds the GX validation result."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.summary())
        self.result = result


@dataclass(frozen=True)
class DataGateConfig:
    """What makes a split unusable. ``classes=None`` means: the classes found on disk.

    Per-image problems (an unreadable, tiny or duplicated file) quarantine the image at scan time
    (:mod:`evaluators.data`) and fail nothing here, until more than ``max_quarantined_fraction`` of a split is
    quarantined. What fails: a class with no image left in ``heldout`` or ``train``, too few held-out images, an
    image in two splits (a leak), a label outside the label map.
    """

    classes: tuple[str, ...] | None = None
    min_rows: int = 50  # held-out images at least
    min_rows_other: int = 1  # images per other split at least
    max_quarantined_fraction: float = 0.1
    every_class_in: tuple[str, ...] = ("heldout", "train")


@dataclass(frozen=True)
class ResultsGateConfig:
    # std/mean of the per-inference samples; enforced when the window medians did not agree (latency_stable = 0).
    # cnnselect passes Settings.gate_max_latency_cov (CNNSELECT_GATE_MAX_LATENCY_COV), whose default this is
    max_latency_cov: float = 0.5
    params_rel_tolerance: float = 0.05  # against the published figure, classifier head set aside


@dataclass
class GateResult:
    suite: str
    subject: str  # what was validated: a dataset digest, or "<variant>/<runner>"
    success: bool
    failures: list[str] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)  # GX's ExpectationSuiteValidationResult as JSON
    quarantined: dict[str, str] = field(default_factory=dict)  # data gate: files left out, with the reason

    def summary(self) -> str:
        if self.success:
            return f"gate {self.suite} passed for {self.subject}"
        return f"gate {self.suite} failed for {self.subject}: " + "; ".join(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "subject": self.subject,
            "success": self.success,
            "failures": self.failures,
            "quarantined": self.quarantined,
            "validation": self.validation,
        }


_CONTEXT: list[Any] = []  # one ephemeral context per process (each new one creates a temporary docs folder)


def import_gx() -> tuple[Any, Any]:
    """Great Expectations and its expectations, imported quietly, with no context made.

    ``cnnselect.celery_worker`` imports it so, before its pool forks.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no phoning home from workers without network
    import logging

    # before the import: importing GX logs ~200 INFO lines of its own (one per decorated API) into every task log
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _gx() -> tuple[Any, Any, Any]:
    gx, gxe = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if not _CONTEXT:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _CONTEXT.append(context)
    return gx, gxe, _CONTEXT[0]


_BATCHES: dict[str, Any] = {}  # part name -> its whole-dataframe batch definition, in the process's context
_LOCK = threading.Lock()  # one validation at a time: the shared context is not thread-safe


def _batch_definition(part: str) -> Any:
    """The batch definition for frames named ``part``, made once per process.

    Each data source or asset added to the context saves its configuration: made and deleted for every gate, they
    cost about 8% of a results gate.
    """
    if part not in _BATCHES:
        _, _, context = _gx()
        name = "cnnselect-frames"
        source = next((d for d in context.data_sources.all().values() if d.name == name), None)
        source = source or context.data_sources.add_pandas(name=name)
        _BATCHES[part] = source.add_dataframe_asset(name=part).add_batch_definition_whole_dataframe(f"{part}-whole")
    return _BATCHES[part]


def _validate(
    frames: Mapping[str, Any],
    suites: Mapping[str, list[Any]],
    suite: str,
    subject: str,
    keys: Sequence[str] = (),
) -> GateResult:
    """Validate each named frame against its expectations; one result with every failure named.

    With ``keys`` (columns of each frame), a failed expectation is quoted by the rows it failed on: their keys and the
    columns it compared, instead of the values alone.
    """
    gx, _, _ = _gx()
    failures: list[str] = []
    validations: dict[str, Any] = {}
    fmt: str | dict[str, Any] = (
        {"result_format": "SUMMARY", "unexpected_index_column_names": list(keys)} if keys else "SUMMARY"
    )
    with _LOCK:
        results = {}
        for part, df in frames.items():
            # Not added to the context's suite store: each add_expectation there serializes the whole suite (seconds
            # for a suite of ~90 expectations), and nothing reads the suite back.
            s = gx.ExpectationSuite(name=f"{suite}.{part}", expectations=list(suites[part]))
            batch = _batch_definition(part).get_batch(batch_parameters={"dataframe": df})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[part] = batch.validate(s, result_format=fmt)
    for part, result in results.items():
        validations[part] = result.to_json_dict()
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            seen = r.result or {}
            rows = seen.get("partial_unexpected_index_list") if keys else None
            found = ("partial_unexpected_list", "partial_missing_list", "details", "observed_value")
            detail = _plain_rows(rows, keys) if rows else next((seen[k] for k in found if seen.get(k)), None)
            raised = (r.exception_info or {}).get("exception_message") if r.exception_info else None
            failures.append(f"[{part}] {cfg.type} {kwargs}: " + (f"error {raised}" if raised else f"saw {detail!r}"))
    return GateResult(suite, subject, not failures, failures, validations)


def _plain_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The rows an expectation failed on, each once, keys first, in plain Python values (not numpy's or pandas')."""
    import pandas as pd

    out: list[dict[str, Any]] = []
    for row in rows:
        ordered = sorted(row.items(), key=lambda kv: keys.index(kv[0]) if kv[0] in keys else len(keys))
        plain = {k: None if pd.isna(v) else v.item() if hasattr(v, "item") else v for k, v in ordered}
        if plain not in out:
            out.append(plain)
    return out


# --- held-out data ------------------------------------------------------------------------------------------------


def image_rows(manifest: DatasetManifest) -> Any:
    """One row per file of every split, quarantined ones included, from the manifest (no image is decoded again)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for split, sm in sorted(manifest.splits.items()):
        for rel, why in sorted(sm.quarantined.items()):
            rows.append(dict(split=split, path=rel, label=sm.label_of(rel), quarantined=True, error=why))
        for rel, r in sorted(sm.files.items()):
            rows.append(
                dict(
                    split=split,
                    path=rel,
                    label=sm.label_of(rel),
                    sha256=r.sha256,
                    quarantined=False,
                    width=r.width,
                    height=r.height,
                )
            )
    columns = ["split", "path", "label", "sha256", "quarantined", "width", "height", "error"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("width", "height"):
        df[col] = df[col].astype("Float64")
    return df


def _data_expectations(gxe: Any, cfg: DataGateConfig, classes: Sequence[str], min_rows: int, every: bool) -> list[Any]:
    cols = ("split", "path", "label", "sha256", "width", "height")
    ex: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in cols]
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols]  # an empty column is all nulls: fails
    ex += [
        gxe.ExpectTableRowCountToBeBetween(min_value=max(1, min_rows)),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes)),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=_SHA256),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),  # no duplicate image within the split
        gxe.ExpectColumnValuesToBeUnique(column="path"),
    ]
    if every:  # a class with no image left cannot be scored (held-out) or learned (train)
        ex.append(gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=list(classes)))
    return ex


def check_data(manifest: DatasetManifest, config: DataGateConfig | None = None) -> GateResult:
    """The data suite per split (usable images), the quarantine per split, and one suite across splits (no leak)."""
    import pandas as pd

    _, gxe, _ = _gx()
    cfg = config or DataGateConfig()
    classes = tuple(cfg.classes) if cfg.classes is not None else tuple(manifest.classes)
    rows = image_rows(manifest)
    frames: dict[str, Any] = {}
    suites: dict[str, list[Any]] = {}
    for split in sorted(set(manifest.splits) | {"heldout"}):
        of_split = rows[rows["split"] == split]
        frames[split] = of_split[~of_split["quarantined"].astype(bool)].reset_index(drop=True)
        suites[split] = _data_expectations(
            gxe,
            cfg,
            classes,
            cfg.min_rows if split == "heldout" else cfg.min_rows_other,
            split in cfg.every_class_in,
        )
        frames[f"{split}_quarantine"] = of_split[["path", "quarantined"]].reset_index(drop=True)
        suites[f"{split}_quarantine"] = [
            gxe.ExpectColumnValuesToBeInSet(
                column="quarantined", value_set=[False], mostly=max(0.0, 1.0 - cfg.max_quarantined_fraction)
            )
        ]
    # across splits: a hash seen in two splits is a leak; duplicates within a split are quarantined at scan time
    usable = rows[~rows["quarantined"].astype(bool)]
    per_split = usable.dropna(subset=["sha256"]).drop_duplicates(["split", "sha256"])
    frames["across_splits"] = pd.DataFrame({"sha256": per_split["sha256"].to_numpy()})
    suites["across_splits"] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="sha256"),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
    ]
    subject = f"dataset {manifest.name} ({manifest.digest[:12]})"
    result = _validate(frames, suites, DATA_SUITE, subject)
    result.quarantined = manifest.quarantined()
    for split, sm in sorted(manifest.splits.items()):
        total = sm.count + len(sm.quarantined)
        if total and len(sm.quarantined) > cfg.max_quarantined_fraction * total:
            first = "; ".join(f"{p} ({why})" for p, why in list(sorted(sm.quarantined.items()))[:5])
            result.failures.append(
                f"{split}: {len(sm.quarantined)} of {total} files quarantined, more than "
                f"{cfg.max_quarantined_fraction:.0%} (CNNSELECT_MAX_QUARANTINED_FRACTION): {first}"
            )
    leaks = per_split[per_split.duplicated("sha256", keep=False)]
    if len(leaks):  # name the files, not only the hashes: the fix is to delete one copy
        shown = "; ".join(f"{s}: {p}" for s, p in zip(leaks["split"][:10], leaks["path"][:10], strict=True))
        result.failures.append(f"{len(leaks)} image(s) appear in more than one split: {shown}")
    return result


# --- results ------------------------------------------------------------------------------------------------------


def comparable_params(model: Any, published_params_m: float | None, pretrained_classes: int = 1000) -> dict[str, float]:
    """Parameters without the classifier head, measured and published, so a 10-class head compares to a 1000-class one.

    The published figure counts a ``pretrained_classes``-way linear head (``in_features * classes + classes``); the
    measured model's head (``get_classifier()``, timm's API) is subtracted from the measured count, and a head of the
    same input width is subtracted from the published figure. Models without ``get_classifier`` return nothing (the
    check is then skipped, and the result says so).
    """
    if published_params_m is None or not hasattr(model, "get_classifier"):
        return {}
    head = model.get_classifier()
    head_params = sum(p.numel() for p in head.parameters()) if hasattr(head, "parameters") else 0
    in_features = getattr(head, "in_features", None)
    if in_features is None:
        return {}
    total = sum(p.numel() for p in model.parameters())
    published_head = in_features * pretrained_classes + pretrained_classes
    return {
        "params_backbone_m": (total - head_params) / 1e6,
        "published_backbone_params_m": published_params_m - published_head / 1e6,
    }


def result_bounds(cfg: ResultsGateConfig) -> dict[str, tuple[float, float, float]]:
    """Each gated metric's valid range: ``(at_least, above, at_most)``, ``-inf``/``inf`` where there is no bound.

    Every metric named here must be there but those of :data:`OPTIONAL_METRICS`. A metric not named here must still
    be finite.
    """
    inf = math.inf
    return {
        **{m: (0.0, -inf, 1.0) for m in ACCURACY_METRICS},
        **{m: (-inf, 0.0, inf) for m in LATENCY_METRICS},
        "latency_cov": (0.0, -inf, inf),
        "latency_cov_unstable": (0.0, -inf, cfg.max_latency_cov),
        "size_mb": (-inf, 0.0, inf),
        "params_m": (-inf, 0.0, inf),
        "params_rel_diff": (0.0, -inf, cfg.params_rel_tolerance),
    }


OPTIONAL_METRICS = ("params_rel_diff",)  # only entries with a comparable published figure have it


def results_rows(evaluations: Iterable[Mapping[str, Any]], cfg: ResultsGateConfig | None = None) -> Any:
    """One row per (variant, runner, metric): its value (null when missing, NaN or infinite) and its valid range.

    Every metric an evaluation has is a row, and so is each bounded metric it lacks (value null), those of
    :data:`OPTIONAL_METRICS` aside. Two metrics are derived here: ``latency_cov_unstable`` (the CoV, or 0 when the
    robust window medians agree: stable windows excuse a CoV inflated by a few stalls) and ``params_rel_diff`` (own
    against published backbone params).
    """
    import pandas as pd

    bounds = result_bounds(cfg or ResultsGateConfig())
    unbounded = (-math.inf, -math.inf, math.inf)
    rows = []
    for ev in evaluations:
        values: dict[str, float | None] = dict.fromkeys(m for m in bounds if m not in OPTIONAL_METRICS)
        for k, v in dict(ev.get("metrics", {})).items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            values[k] = f if math.isfinite(f) else None
        cov, stable = values.get("latency_cov"), values.get("latency_stable")
        if cov is not None:
            values["latency_cov_unstable"] = 0.0 if stable == 1.0 else cov
        pub, own = values.get("published_backbone_params_m"), values.get("params_backbone_m")
        if pub is not None and own is not None and pub > 0:
            values["params_rel_diff"] = abs(own - pub) / pub
        key = {"variant": ev.get("variant"), "runner": ev.get("runner")}
        for metric, value in values.items():
            low, above, high = bounds.get(metric, unbounded)
            rows.append({**key, "metric": metric, "value": value, "at_least": low, "above": above, "at_most": high})
    df = pd.DataFrame(rows, columns=[*RESULT_KEYS, "value", "at_least", "above", "at_most"])
    df["value"] = df["value"].astype("Float64")
    return df


def check_results(
    evaluations: Sequence[Mapping[str, Any]], config: ResultsGateConfig | None = None, subject: str | None = None
) -> GateResult:
    """The results suite over one or more evaluations: ``{"variant", "runner", "metrics": {...}}`` each.

    One long frame (:func:`results_rows`) and seven expectations, whatever the number of metrics: every value there
    and finite, and within its row's bounds, each failure quoting the rows (variant, runner, metric) it failed on. GX
    builds a metric graph per expectation (about 5 ms each here): one range check per metric, as the suite had, cost
    four times as much.
    """
    _, gxe, _ = _gx()
    df = results_rows(evaluations, config)
    pair = {"ignore_row_if": "either_value_is_missing"}  # a missing value fails the null check, once
    ex: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("variant", "runner")),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),  # missing, NaN or infinite
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="at_least", or_equal=True, **pair),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="above", or_equal=False, **pair),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="at_most", column_B="value", or_equal=True, **pair),
    ]
    if subject is None:
        subject = ", ".join(f"{e.get('variant')}/{e.get('runner')}" for e in evaluations) or "no evaluations"
    return _validate({"evaluations": df}, {"evaluations": ex}, RESULTS_SUITE, subject, RESULT_KEYS)


def gate_evaluations(
    evs: Sequence[Any],
    model: Any,
    published_params_m: float | None,
    out_dirs: Sequence[Path],
    config: ResultsGateConfig | None = None,
) -> dict[str, Path | GateError]:
    """The results gate for one model's evaluations (one per runner), keyed by runner: the result file, or the error.

    One GX validation for all of them (a validation costs about as much for one row as for several); when it fails,
    each is gated again on its own, so a runner's verdict never depends on another's figures (a lone evaluation's
    verdict is that validation's already: it is not run twice).
    """
    if not evs:
        return {}
    for ev in evs:
        ev.metrics.update(comparable_params(model, published_params_m))
    together = check_results([_row(ev) for ev in evs], config)
    if together.success:
        return {ev.runner: _saved(together, out) for ev, out in zip(evs, out_dirs, strict=True)}
    out: dict[str, Path | GateError] = {}
    for ev, out_dir in zip(evs, out_dirs, strict=True):
        alone = together if len(evs) == 1 else check_results([_row(ev)], config)
        path = _saved(alone, out_dir)
        out[ev.runner] = path if alone.success else GateError(alone)
    return out


def gate_evaluation(
    ev: Any, model: Any, published_params_m: float | None, out_dir: Path, config: ResultsGateConfig | None = None
) -> Path:
    """The results gate for one ``registry.tracking.Evaluation`` before it is logged and registered.

    Adds the head-free parameter counts to ``ev.metrics`` (so they are logged), validates, writes the GX result to
    ``out_dir/cnnselect.results.json`` and returns that path (the caller logs it with the run); raises
    :class:`GateError` (holding the result) when the gate fails, so nothing is registered for this item.
    """
    ev.metrics.update(comparable_params(model, published_params_m))
    result = check_results([_row(ev)], config)
    path = _saved(result, out_dir)
    if not result.success:
        raise GateError(result)
    return path


def _row(ev: Any) -> dict[str, Any]:
    return {"variant": ev.variant, "runner": ev.runner, "metrics": ev.metrics}


def _saved(result: GateResult, out_dir: Path) -> Path:
    """``result`` written to ``out_dir/cnnselect.results.json`` (logged with the run, passed or not)."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{RESULTS_SUITE}.json"
    path.write_text(json.dumps(result.to_json(), indent=1, default=str))
    return path
