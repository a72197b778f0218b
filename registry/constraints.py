"""What a team declares: target runner, operating point, budgets and the objective."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evaluators.runners import RUNNER_NAMES

Objective = Literal["top1", "latency", "size"]
Percentile = Literal[50, 90, 95, 99]


class Constraints(BaseModel):
    """A frozen, validated constraint set. Unknown keys are refused.

    Budgets are checked against confidence bounds, not point estimates: the upper bound of the latency percentile
    must be within ``max_latency_ms`` and the lower bound of top-1 at least ``min_top1``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field("cpu", description="runner the model will be deployed on")
    dataset: str = "digits"
    task: Literal["classification"] = "classification"
    max_latency_ms: float | None = Field(None, gt=0)
    latency_percentile: Percentile = 95
    max_params_m: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)
    max_gmacs: float | None = Field(None, gt=0)
    min_top1: float | None = Field(None, ge=0, le=1, description="fraction, e.g. 0.9")
    families: tuple[str, ...] | None = None
    objective: Objective = "top1"

    @field_validator("target")
    @classmethod
    def _known_runner(cls, v: str) -> str:
        if v not in RUNNER_NAMES:
            raise ValueError(f"unknown target runner {v!r}; known runners: {', '.join(RUNNER_NAMES)}")
        return v

    @field_validator("families")
    @classmethod
    def _known_families(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from catalog import Family

        if v is None:
            return v
        known = {f.value for f in Family}
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown families {bad}; known: {', '.join(sorted(known))}")
        return tuple(v)

    @model_validator(mode="after")
    def _dataset_name(self) -> Constraints:
        from registry.names import validate_name

        validate_name("dataset", self.dataset)
        return self

    @property
    def latency_metric(self) -> str:
        return f"latency_p{self.latency_percentile}_ms"
