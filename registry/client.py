"""The read side: a thin, picklable facade over ``MlflowClient`` that answers ``get_best``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, judge, rank, select
from registry.settings import Settings


@dataclass
class Answer:
    """The chosen version: its ``models:/`` URI, metrics and the reasons, and ``load()`` for a ready session."""

    candidate: Candidate
    verdict: Verdict
    verdicts: list[Verdict]
    constraints: Constraints
    _registry: Registry = field(repr=False)

    @property
    def uri(self) -> str:
        return self.candidate.uri

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.candidate.metrics)

    def explain(self) -> str:
        feasible = [v for v in rank(self.verdicts, self.constraints) if v.label == "feasible"]
        others = [v for v in self.verdicts if v.label != "feasible"]
        lines = [f"chosen: {self.verdict.describe()} ({self.uri})"]
        lines += [f"  feasible: {v.describe()}" for v in feasible[1:]]
        lines += [f"  {v.label}: {v.describe()}" for v in others]
        return "\n".join(lines)

    def load(self) -> Any:
        """An onnxruntime session for the chosen artifact, on the target runner's settings."""
        return self._registry.load(self.candidate)


class Registry:
    """Candidates from the MLflow model registry; the client is created lazily so the object pickles."""

    def __init__(self, tracking_uri: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.tracking_uri = tracking_uri or self.settings.resolved_tracking_uri
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def candidates(self, dataset: str, runner: str | None = None) -> list[Candidate]:
        """Every READY, successfully evaluated version of the dataset's registered model (one registry search)."""
        model_name = names.registered_model_name(dataset)
        out: list[Candidate] = []
        token = None
        while True:
            page = self.client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
            for mv in page:
                tags = mv.tags or {}
                if mv.status != "READY" or tags.get(names.TAG_STATUS) != names.STATUS_OK:
                    continue
                if runner is not None and tags.get(names.TAG_RUNNER) != runner:
                    continue
                metrics = {}
                for k, v in tags.items():
                    if k.startswith(names.METRIC_TAG_PREFIX):
                        try:
                            value = float(v)
                        except ValueError:
                            continue
                        if math.isfinite(value):
                            metrics[k[len(names.METRIC_TAG_PREFIX) :]] = value
                out.append(
                    Candidate(
                        model_name=model_name,
                        version=str(mv.version),
                        run_id=tags.get("cnnselect.run_id", mv.run_id or ""),
                        variant=tags.get(names.TAG_VARIANT, ""),
                        family=tags.get(names.TAG_FAMILY, ""),
                        runner=tags.get(names.TAG_RUNNER, ""),
                        precision=tags.get(names.TAG_PRECISION, ""),
                        fingerprint=tags.get(names.TAG_FINGERPRINT, ""),
                        metrics=metrics,
                    )
                )
            token = page.token
            if not token:
                break
        return out

    def explain(self, constraints: Constraints) -> list[Verdict]:
        return [judge(c, constraints) for c in self.candidates(constraints.dataset, constraints.target)]

    def get_best(self, constraints: Constraints) -> Answer:
        """The best version that satisfies every constraint; ``NoFeasibleModelError`` names the nearest misses."""
        best, verdicts = select(self.candidates(constraints.dataset, constraints.target), constraints)
        return Answer(best.candidate, best, verdicts, constraints, self)

    def load(self, candidate: Candidate) -> Any:
        import mlflow.artifacts

        from evaluators.runners import get_runner

        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=candidate.uri,
                tracking_uri=self.tracking_uri,
            )
        )
        onnx_files = sorted(local.rglob("*.onnx"))
        if not onnx_files:
            raise FileNotFoundError(f"{candidate.uri} has no .onnx file (downloaded to {local})")
        runner = get_runner(candidate.runner)
        return runner.load(onnx_files[0])
