import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from registry.constraints import Constraints
from registry.errors import NoCandidatesError, NoFeasibleModelError
from registry.selection import Candidate, judge, select


def cand(variant: str, version: int = 1, runner: str = "cpu", family: str = "resnet", **metrics: float) -> Candidate:
    base = {
        "top1": 0.9,
        "top1_ci_low": 0.88,
        "latency_p95_ms": 3.0,
        "latency_p95_ub_ms": 3.2,
        "params_m": 5.0,
        "size_mb": 20.0,
        "gmacs": 0.5,
        "onnx_parity_ok": 1.0,
    }
    return Candidate(
        "cnnselect-digits", str(version), f"run{version}", variant, family, runner, "fp32", "fp", {**base, **metrics}
    )


def test_unknown_key_and_runner_and_negative_budget_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown Constraints key 'max_latency'. Did you mean 'max_latency_ms'"):
        Constraints(max_latency=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="known runners: cpu, edge"):
        Constraints(target="tpu")
    with pytest.raises(ValidationError, match="greater than 0"):
        Constraints(max_latency_ms=-1)
    with pytest.raises(ValidationError, match="invalid dataset name"):
        Constraints(dataset="x' or name LIKE '%")
    with pytest.raises(ValidationError, match="task 'detection' is not supported yet: only 'classification'"):
        Constraints(task="detection")


def test_bounds_decide_feasible_marginal_infeasible() -> None:
    k = Constraints(max_latency_ms=3.1, min_top1=0.85)
    assert judge(cand("a", latency_p95_ub_ms=3.05), k).label == "feasible"
    assert judge(cand("b"), k).label == "marginal"  # point 3.0 passes, bound 3.2 does not
    explained = judge(cand("b"), k).describe()
    assert "latency_p95_ms ≤ 3.2 (95% upper bound; point 3) fails 3.1 (margin -3.2%)" in explained
    assert judge(cand("c", latency_p95_ms=4.0, latency_p95_ub_ms=4.5), k).label == "infeasible"


def test_best_by_objective_and_only_on_target() -> None:
    pool = [
        cand("slow_acc", 1, top1=0.99, latency_p95_ub_ms=2.9),
        cand("fast", 2, top1=0.9, latency_p95_ms=1.0, latency_p95_ub_ms=1.1),
        cand("edge_best", 3, runner="edge", top1=1.0),
    ]
    k = Constraints(max_latency_ms=3.0)
    assert select(pool, k)[0].candidate.variant == "slow_acc"
    assert select(pool, k.model_copy(update={"objective": "latency"}))[0].candidate.variant == "fast"
    with pytest.raises(NoCandidatesError, match="nothing measured on runner 'edge'"):
        select(pool[:2], Constraints(target="edge"))


def test_threads_nobody_measured_at_says_which_were() -> None:
    pool = [cand("a"), cand("b", 2)]  # threads "all": the runner's default
    why = r"threads 2; measured there with threads all only \('all': the runner's default, every core of the measuring"
    with pytest.raises(NoCandidatesError, match=why + r" host; this one has \d+\)\. Drop threads to use them"):
        select(pool, Constraints(threads=2))
    with pytest.raises(NoCandidatesError, match=r"precision int8$"):
        select(pool, Constraints(target="edge"))  # nothing on the runner: no threads to name


def test_infeasible_error_names_constraint_and_margin() -> None:
    pool = [cand("a", params_m=12.0), cand("b", 2, params_m=30.0, top1=0.5, top1_ci_low=0.4)]
    with pytest.raises(NoFeasibleModelError, match=r"max_params_m: params_m=12 fails 10 \(margin -20.0%\)") as err:
        select(pool, Constraints(max_params_m=10, min_top1=0.8))
    assert [v.candidate.variant for v in err.value.nearest] == ["a", "b"]


def test_bounds_and_categories_are_worded_as_what_they_are() -> None:
    top1 = judge(cand("a", top1=0.907, top1_ci_low=0.878), Constraints(min_top1=0.8)).checks[0]
    assert top1.describe() == "min_top1: top1 ≥ 0.878 (95% lower bound; point 0.907) meets 0.8 (margin +9.7%)"
    k = Constraints(families=("efficientnet", "mobilenetv3"))
    fam, parity = judge(cand("b", family="resnet", onnx_parity_ok=0.0), k).checks
    assert fam.describe() == "families: family resnet is not allowed (efficientnet, mobilenetv3)"
    assert "family=0" not in judge(cand("c", family="efficientnet"), k).describe()
    assert parity.describe() == "onnx_parity: the ONNX export differs from the PyTorch model (onnx_parity_ok=0)"


def test_missing_or_nan_metric_and_failed_parity_are_never_feasible() -> None:
    k = Constraints(max_latency_ms=10)
    assert judge(cand("nan", latency_p95_ms=math.nan, latency_p95_ub_ms=math.nan), k).label == "infeasible"
    assert judge(cand("parity", onnx_parity_ok=0.0), k).label == "infeasible"
    c = cand("unmeasured")
    del c.metrics["top1"]
    assert judge(c, Constraints()).label == "infeasible"


metric = st.floats(0.01, 100, allow_nan=False)


@settings(max_examples=250, deadline=None)
@given(
    pool=st.lists(
        st.tuples(metric, metric, st.floats(0, 1), metric, st.sampled_from(["resnet", "vgg"])), min_size=1, max_size=12
    ),
    lat=st.none() | metric,
    params=st.none() | metric,
    top1=st.none() | st.floats(0, 1),
    objective=st.sampled_from(["top1", "latency", "size"]),
)
def test_select_agrees_with_brute_force_oracle(pool, lat, params, top1, objective) -> None:
    cands = [
        cand(
            f"m{i}",
            i + 1,
            family=f,
            latency_p95_ms=l0,
            latency_p95_ub_ms=l0 * 1.1,
            params_m=p,
            top1=t,
            top1_ci_low=max(0.0, t - 0.02),
            size_mb=s,
        )
        for i, (l0, p, t, s, f) in enumerate(pool)
    ]
    k = Constraints(max_latency_ms=lat, max_params_m=params, min_top1=top1, objective=objective)

    def ok(c: Candidate) -> bool:
        m = c.metrics
        return (
            (lat is None or m["latency_p95_ub_ms"] <= lat)
            and (params is None or m["params_m"] <= params)
            and (top1 is None or m["top1_ci_low"] >= top1)
        )

    def key(c: Candidate):
        m = c.metrics
        t = {
            "top1": (-m["top1"], m["latency_p95_ms"], m["size_mb"]),
            "latency": (m["latency_p95_ms"], -m["top1"], m["size_mb"]),
            "size": (m["size_mb"], -m["top1"], m["latency_p95_ms"]),
        }[objective]
        return (*t, c.variant, int(c.version))

    feasible = sorted(filter(ok, cands), key=key)
    if not feasible:
        with pytest.raises(NoFeasibleModelError):
            select(cands, k)
    else:
        assert select(cands, k)[0].candidate == feasible[0]
