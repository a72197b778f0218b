"""What a team declares: target runner or host, operating point, budgets and the objective.

The vocabulary follows the selection guide's first step (deployment target, latency, model size, dataset size,
accuracy, task type). The same model validates a team's YAML file and a ``Constraints(...)`` built in code.

The target is one runner (``cpu``, ``openvino-int8``: every answer is for it and its precision) or a host kind
(``cpu-host``, ``gpu-host``): every runtime measured on one machine of that kind, narrowed by ``runtimes``,
``precision`` and ``precisions`` (:mod:`registry.hosts` answers it).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from evaluators.runners import HOSTS, RUNNER_NAMES, RUNNER_PRECISION, host_runners

Objective = Literal["top1", "latency", "size", "weighted"]
Metric = Literal["top1", "latency", "size", "params", "gmacs", "memory"]
Percentile = Literal[50, 90, 95, 99]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Deployment = Literal["cloud", "edge", "mobile"]

DEFAULT_TIE_BREAKERS: dict[str, tuple[str, ...]] = {
    "top1": ("latency", "size"),
    "latency": ("top1", "size"),
    "size": ("top1", "latency"),
    "weighted": ("top1", "latency", "size"),
}


def did_you_mean(kind: str, given: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {given!r}.{hint} Valid: {', '.join(sorted(valid))}"


class StrictModel(BaseModel):
    """Frozen, unknown keys refused with "did you mean" (pydantic's own message lists nothing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            bad = [k for k in data if k not in valid]
            if bad:
                raise ValueError("; ".join(did_you_mean(f"{cls.__name__} key", str(k), valid) for k in bad))
        return data


class Constraints(StrictModel):
    """A frozen, validated constraint set.

    Budgets are checked against confidence bounds, not point estimates: the upper bound of the latency percentile
    must be within ``max_latency_ms`` and the lower bound of top-1 at least ``min_top1``.
    """

    target: str = Field("cpu", description="runner the model will be deployed on, or a host kind (cpu-host, gpu-host)")
    runtimes: tuple[str, ...] | None = Field(None, description="host target: the runners allowed; None = every one")
    host: str | None = Field(None, description="host id (hardware only) measured on; None = the latest measured")
    deployment: Deployment | None = Field(None, description="the guide's deployment target; default from the runner")
    dataset: str = "digits"
    dataset_size: int | None = Field(None, gt=0, description="training images (drives the cold-start shortlist)")
    task: str = "classification"
    # operating point: the measurement must have been taken at these settings
    batch_size: int = Field(1, gt=0)
    latency_percentile: Percentile = 95
    precision: Precision | None = Field(None, description="default: the target runner's; a host target: any")
    threads: int | None = Field(None, gt=0, description="intra-op threads; None = whatever the runner used")
    fingerprint: str | None = Field(None, description="hardware/software fingerprint id; None = the latest measured")
    # budgets
    max_latency_ms: float | None = Field(None, gt=0)
    max_params_m: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)
    max_gmacs: float | None = Field(None, gt=0)
    max_peak_memory_mb: float | None = Field(None, gt=0)
    min_top1: float | None = Field(None, ge=0, le=1, description="fraction, e.g. 0.9")
    max_top1_drop: float | None = Field(None, ge=0, le=1, description="top-1 lost against the FP32 export, fraction")
    families: tuple[str, ...] | None = None
    precisions: tuple[Precision, ...] | None = None
    # objective
    objective: Objective = "top1"
    tie_breakers: tuple[Metric, ...] | None = None
    weights: dict[Metric, float] | None = Field(None, description="weighted objective: minimise sum(w * cost)")

    @field_validator("target")
    @classmethod
    def _known_runner(cls, v: str) -> str:
        if v not in RUNNER_NAMES and v not in HOSTS:
            close = difflib.get_close_matches(v, [*RUNNER_NAMES, *HOSTS], n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"unknown target runner {v!r}; known runners: {', '.join(RUNNER_NAMES)}; or a host kind, every runner "
                f"of it weighed: known hosts: {', '.join(HOSTS)}.{hint}"
            )
        return v

    @field_validator("host")
    @classmethod
    def _host_name(cls, v: str | None) -> str | None:
        from registry.names import validate_name

        return None if v is None else validate_name("host", v)

    @field_validator("min_top1", "max_top1_drop", mode="before")
    @classmethod
    def _fraction(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and 1 < v <= 100:
            raise ValueError(
                f"{info.field_name} is a fraction in [0, 1], not a percentage: got {v:g} (did you mean {v / 100:g}?)"
            )
        return v

    @field_validator("task")
    @classmethod
    def _classification_only(cls, v: str) -> str:
        if v != "classification":
            raise ValueError(
                f"task {v!r} is not supported yet: only 'classification' (detection and segmentation need other "
                "heads and metrics; see the guide's task-type branch)"
            )
        return v

    @field_validator("families")
    @classmethod
    def _known_families(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from catalog import Family

        if v is None:
            return v
        known = [f.value for f in Family]
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError("; ".join(did_you_mean("family", f, known) for f in bad))
        if not v:
            raise ValueError("families is empty: no model could ever be allowed (omit it to allow every family)")
        return tuple(v)

    @model_validator(mode="after")
    def _consistent(self) -> Constraints:
        from registry.names import validate_name

        validate_name("dataset", self.dataset)
        if self.on_host:
            self._host_runtimes()
        elif self.runtimes is not None:
            raise ValueError(
                f"runtimes narrows a host target ({', '.join(HOSTS)}); target {self.target!r} is one runner already: "
                f"drop runtimes, or set target to {_host_of(self.target)!r}"
            )
        runner_precision = RUNNER_PRECISION.get(self.target)
        if self.precision is not None and runner_precision and self.precision != runner_precision:
            raise ValueError(
                f"contradictory: precision {self.precision!r} but target {self.target!r} deploys {runner_precision!r}"
            )
        if self.precisions is not None:
            if not self.precisions:
                raise ValueError("precisions is empty: no model could ever be allowed")
            if not self.on_host and self.effective_precision not in self.precisions:
                raise ValueError(
                    f"contradictory: target {self.target!r} runs {self.effective_precision!r}, "
                    f"not in allowed precisions {list(self.precisions)}"
                )
        if self.objective == "weighted":
            if not self.weights or all(w == 0 for w in self.weights.values()):
                raise ValueError("objective 'weighted' needs non-zero weights, e.g. {top1: 100, latency: 1}")
        elif self.weights:
            raise ValueError(f"weights given but objective is {self.objective!r}: set objective: weighted")
        if self.weights and any(w < 0 for w in self.weights.values()):
            raise ValueError("weights must be >= 0 (every cost is oriented lower-is-better already)")
        if self.tie_breakers is not None:
            if len(set(self.tie_breakers)) != len(self.tie_breakers):
                raise ValueError(f"tie_breakers repeat a metric: {list(self.tie_breakers)}")
            if self.objective in self.tie_breakers:
                raise ValueError(f"tie_breakers include the objective {self.objective!r} itself")
        return self

    def _host_runtimes(self) -> None:
        """A host target's runtimes are runners of that host, and some survive the precision filters."""
        valid = list(host_runners(self.target))
        if self.runtimes is not None:
            if not self.runtimes:
                raise ValueError(f"runtimes is empty: no runner could ever be allowed (valid: {', '.join(valid)})")
            bad = [r for r in self.runtimes if r not in valid]
            if bad:
                kind = f"{self.target} runtime"
                raise ValueError("; ".join(did_you_mean(kind, r, valid) for r in bad))
            if len(set(self.runtimes)) != len(self.runtimes):
                raise ValueError(f"runtimes repeat a runner: {list(self.runtimes)}")
        if not self.runners:
            allowed = self.runtimes or valid
            deploy = ", ".join(f"{r} {RUNNER_PRECISION[r]}" for r in allowed)
            wanted = self.precision or ", ".join(self.precisions or ())
            raise ValueError(f"contradictory: no runtime of {self.target} deploys {wanted} ({deploy})")

    @property
    def on_host(self) -> bool:
        """The target is a host kind: every runtime of it is weighed, on one machine."""
        return self.target in HOSTS

    @property
    def runners(self) -> tuple[str, ...]:
        """The runners this target weighs: the target itself, or the host's, narrowed by runtimes and precisions."""
        if not self.on_host:
            return (self.target,)
        allowed = set(self.runtimes or ())
        return tuple(
            r
            for r in host_runners(self.target)
            if (not allowed or r in allowed)
            and (self.precision is None or RUNNER_PRECISION[r] == self.precision)
            and (self.precisions is None or RUNNER_PRECISION[r] in self.precisions)
        )

    @property
    def effective_precision(self) -> str:
        """The target runner's precision (a host target has one per runner: see :attr:`runners`)."""
        return self.precision or RUNNER_PRECISION.get(self.target, "fp32")

    @property
    def effective_deployment(self) -> str:
        return self.deployment or ("edge" if self.target == "edge" else "cloud")

    @property
    def effective_tie_breakers(self) -> tuple[str, ...]:
        return self.tie_breakers if self.tie_breakers is not None else DEFAULT_TIE_BREAKERS[self.objective]

    @property
    def latency_metric(self) -> str:
        return f"latency_p{self.latency_percentile}_ms"


def _host_of(runner: str) -> str:
    from evaluators.runners import RUNNER_HOST

    return RUNNER_HOST[runner]
