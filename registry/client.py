"""The read side: a thin, picklable facade over ``MlflowClient`` that answers ``get_best``."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from registry import names
from registry.constraints import Constraints
from registry.errors import NoChampionError, RegistryError
from registry.index import CandidateIndex
from registry.selection import (
    Candidate,
    Verdict,
    at_operating_point,
    judge,
    no_candidates,
    no_feasible,
    rank,
    rank_key,
)
from registry.settings import Settings
from registry.teams import Team, load_team


@dataclass
class Answer:
    """The chosen version: its ``models:/`` URI, metrics and the reasons, and ``load()`` for a ready session."""

    candidate: Candidate
    verdict: Verdict
    _pool: list[Candidate] | None = field(repr=False)  # None: answered in the store; the index is read on first use
    constraints: Constraints
    _registry: Registry = field(repr=False)
    _verdicts: list[Verdict] | None = field(default=None, repr=False)

    @property
    def pool(self) -> list[Candidate]:
        """Every candidate at the constraints' operating point and fingerprint, in rank order.

        An answer computed in the store reads its pool from the index on first use: the store as it is then, with
        the chosen candidate kept in it (at its rank) should it have changed since, so the answer explains itself.
        """
        if self._pool is None:
            k = self.constraints
            snap = self._registry.index.snapshot(names.registered_model_name(k.dataset))
            pool = snap.ranked_pool(k.model_dump_json(), k).candidates
            self._pool = pool if self.candidate in pool else sorted([*pool, self.candidate], key=rank_key(k))
        return self._pool

    @property
    def uri(self) -> str:
        return self.candidate.uri

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.candidate.metrics)

    @property
    def verdicts(self) -> list[Verdict]:
        """Every candidate of the pool judged (computed on first use: ``get_best`` itself judges only a few)."""
        if self._verdicts is None:
            self._verdicts = [judge(c, self.constraints) for c in self.pool]
        return self._verdicts

    def explained(self) -> list[Verdict]:
        """The chosen verdict, then the other feasible ones best first, then the rest: the order ``explain`` says."""
        feasible = [v for v in rank(self.verdicts, self.constraints) if v.label == "feasible"]
        others = [v for v in self.verdicts if v.label != "feasible"]
        return [self.verdict, *(v for v in feasible if v.candidate.version != self.candidate.version), *others]

    def explain(self) -> str:
        chosen, *rest = self.explained()
        lines = [f"chosen: {chosen.describe()} ({self.uri})"]
        lines += [f"  {v.label}: {v.describe()}" for v in rest]
        return "\n".join(lines)

    def load(self) -> Any:
        """An onnxruntime session for the chosen artifact, on the target runner's settings."""
        return self._registry.load(self.candidate)

    def preprocess(self, images: Any) -> Any:
        """Photos (paths or PIL images) to exactly the float32 NCHW tensors the measured artifact saw.

        timm's eval transform recorded with the version (``cnnselect.preprocess``): resize, centre crop, interpolation,
        mean and std of the pretrained tag at the measured resolution, after the same decoding (EXIF, 16-bit, alpha).
        """
        return self._registry.preprocessing(self.candidate)(images)


def local_dir(uri: str) -> str | None:
    """The folder an artifact location names on this machine (a path or ``file:`` URI), else None (remote)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return unquote(parsed.path)
    if parsed.scheme == "" and os.path.isabs(uri):
        return uri
    return None


class Registry:
    """Candidates from the MLflow model registry, served from an in-process index (see :mod:`registry.index`).

    The client and the index are created lazily, so the object pickles (into Airflow tasks, worker processes).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        settings: Settings | None = None,
        *,
        ttl_s: float = 2.0,
        max_age_s: float = 60.0,
        teams_dir: str | Path | None = None,
        prefetch: bool = False,
    ) -> None:
        self.settings = settings or Settings()
        self.tracking_uri = tracking_uri or self.settings.resolved_tracking_uri
        self.ttl_s, self.max_age_s, self.teams_dir = ttl_s, max_age_s, teams_dir
        self.prefetch = prefetch  # after an answer computed in the store, load the index in the background
        self._client: Any = None
        self._index: CandidateIndex | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _index=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    @property
    def index(self) -> CandidateIndex:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = CandidateIndex(self.tracking_uri, lambda: self.client, self.ttl_s, self.max_age_s)
        return self._index

    def invalidate(self, dataset: str | None = None) -> None:
        """Forget what the index holds (after a write this process made and must read back at once)."""
        self.index.invalidate(names.registered_model_name(dataset) if dataset else None)

    def candidates(self, dataset: str, runner: str | None = None) -> list[Candidate]:
        """Every READY, fully and successfully evaluated version of the dataset's registered model."""
        snap = self.index.snapshot(names.registered_model_name(dataset))
        return [c for c in snap.candidates if runner is None or c.runner == runner]

    def team(self, name: str) -> Team:
        return load_team(name, self.teams_dir)

    def _constraints(self, what: Constraints | str) -> Constraints:
        return self.team(what).constraints if isinstance(what, str) else what

    def explain(self, constraints: Constraints | str) -> list[Verdict]:
        k = self._constraints(constraints)
        return [judge(c, k) for c in at_operating_point(self.candidates(k.dataset, k.target), k)]

    def get_best(self, constraints: Constraints | str) -> Answer:
        """The best version satisfying the constraints (or a team's, by name); never one whose artifact is gone.

        ``NoFeasibleModelError`` names the nearest misses; ``NoCandidatesError`` says nothing was measured there.
        """
        k = self._constraints(constraints)
        model, key = names.registered_model_name(k.dataset), k.model_dump_json()
        if self.index.computes_in_store and not self.index.loaded(model):  # cold: no need to load every version
            light = self.index.light(model)
            hit = light.answers.get(key)
            if hit is None or not self.artifact_ok(hit.candidate, light.verified):
                ok = lambda c: self.artifact_ok(c, light.verified)  # noqa: E731
                found = self.index.best_in_store(model, k, ok, light.watermark)
                hit = Answer(found[0], found[1], None, k, self) if found is not None else None
                if hit is not None:
                    light.answers[key] = hit
            if hit is not None:
                if self.prefetch:
                    self.index.prefetch(model)
                return hit
        snap = self.index.snapshot(model)
        cached = snap.answers.get(key)
        if cached is not None and self.artifact_ok(cached.candidate, snap.verified):
            return cached  # warm path: same load, same constraints, same answer (its artifact checked again)
        pool = snap.ranked_pool(key, k)  # built once per snapshot; a delta refresh carries it over
        if not pool.candidates:
            raise no_candidates(k, snap.candidates)
        missing: list[Candidate] = []
        for verdict in pool.feasible():  # best first, judged one by one: a handful, not the whole pool
            if self.artifact_ok(verdict.candidate, snap.verified):
                answer = Answer(verdict.candidate, verdict, pool.candidates, k, self)
                snap.answers[key] = answer
                return answer
            missing.append(verdict.candidate)
        raise no_feasible([judge(c, k) for c in pool.candidates], k, missing)

    def get_champion(self, team: str) -> Answer:
        """The version the team's alias points at, judged against the team's current constraints."""
        k = self.team(team).constraints
        model = names.registered_model_name(k.dataset)
        snap = self.index.snapshot(model)
        version = snap.aliases.get(names.team_alias(team))
        if version is None:
            raise NoChampionError(f"team {team!r} has no champion on {model!r} yet: run `cnnselect promote {team}`")
        found = [c for c in snap.candidates if c.version == version]
        if not found or not self.artifact_ok(found[0], snap.verified):
            raise NoChampionError(
                f"team {team!r}: alias {names.team_alias(team)!r} points at {model} v{version}, which is no longer a "
                f"usable candidate (failed, unlogged or artifact missing); run `cnnselect promote {team}`"
            )
        verdict = judge(found[0], k)
        return Answer(found[0], verdict, found[:1], k, self, [verdict])

    def recommend(self, constraints: Constraints | str) -> list[str]:
        """Cold start: the guide's rule-based shortlist of catalog names for these constraints."""
        from registry.recommend import recommend

        return recommend(self._constraints(constraints))

    def artifact_ok(self, candidate: Candidate, verified: dict[str, tuple[bool, float]] | None = None) -> bool:
        """The version's artifact is there: an ``MLmodel`` file at its storage location.

        A local location (a path or ``file:`` URI, what SQLite and PostgreSQL stores with local artifacts hold) is
        checked with one ``stat`` on every call, so a warm answer never outlives its files. Anything else (served
        artifacts, object stores) is listed through MLflow, at most once per ``ttl_s`` per version (``verified``,
        the snapshot's cache).
        """
        folder = local_dir(candidate.artifact_uri)
        if folder is not None:
            return os.path.isfile(os.path.join(folder, "MLmodel"))
        now = time.monotonic()
        seen = verified.get(candidate.version) if verified is not None else None
        if seen is not None and now - seen[1] < self.ttl_s:
            return seen[0]
        ok = self._listed_ok(candidate)
        if verified is not None:
            verified[candidate.version] = (ok, now)
        return ok

    def _listed_ok(self, candidate: Candidate) -> bool:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            uri = candidate.artifact_uri
            if not uri or uri.startswith("models:"):  # a logged model's URI (what a tracking server returns as source)
                # the registry client directly: MlflowClient's method first fetches the registered model, which
                # makes the server read every version of it (O(versions) per check)
                registry = getattr(self.client, "_get_registry_client", None)
                source = registry() if registry is not None else self.client
                uri = source.get_model_version_download_uri(candidate.model_name, candidate.version)
            files = mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri)
        except (MlflowException, OSError):
            return False
        return any(Path(f.path).name == "MLmodel" for f in files or [])

    def preprocessing(self, candidate: Candidate) -> Any:
        """The version's ``evaluators.images.Preprocess`` (callable on images), read from its tag."""
        import json

        from evaluators.images import Preprocess

        version = self.client.get_model_version(candidate.model_name, candidate.version)
        raw = version.tags.get(names.TAG_PREPROCESS)
        if not raw:
            raise RegistryError(
                f"{candidate.uri} records no preprocessing (measured before evaluator version 2): measure it again"
            )
        return Preprocess.from_dict(json.loads(raw))

    def load(self, candidate: Candidate) -> Any:
        """An onnxruntime session on the version's ONNX file: read in place when local, else downloaded first."""
        import mlflow.artifacts

        from evaluators.runners import get_runner

        folder = local_dir(candidate.artifact_uri)
        if folder is not None and os.path.isdir(folder):
            local = Path(folder)
        else:
            uri, tracking = candidate.uri, self.tracking_uri
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking))
        onnx_files = sorted(local.rglob("*.onnx"))
        if not onnx_files:
            raise FileNotFoundError(f"{candidate.uri} has no .onnx file (downloaded to {local})")
        runner = get_runner(candidate.runner)
        return runner.load(onnx_files[0])
