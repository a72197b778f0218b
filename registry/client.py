"""The read side: a thin, picklable facade over ``MlflowClient`` that answers ``get_best``.

A runner target is answered from one ranked pool (in the store while the index is not loaded, else from memory). A
host target (:mod:`registry.hosts`) is answered runner by runner through the same paths, on one host, and the best of
the runners' bests taken by the same rank key; its answer is cached like any other, per constraints.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from registry import names
from registry.answer import Answer, local_dir
from registry.constraints import Constraints
from registry.errors import NoChampionError, RegistryError
from registry.hosts import host_pool, merged, no_candidates_on_host, runner_constraints, target_host
from registry.index import CandidateIndex
from registry.selection import Candidate, Verdict, at_operating_point, judge, no_candidates, no_feasible, rank_key
from registry.settings import Settings
from registry.teams import Team, load_team

__all__ = ["Answer", "Registry", "local_dir"]


class Registry:
    """Candidates from the MLflow model registry, served from an in-process index (see :mod:`registry.index`).

    The client and the index are created lazily, so the object pickles (into Airflow tasks, worker processes).
    A refresh never blocks a reader that has an answer: see ``stale_s`` and :mod:`registry.index`.
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
        stale_s: float = 30.0,
    ) -> None:
        self.settings = settings or Settings()
        self.tracking_uri = tracking_uri or self.settings.resolved_tracking_uri
        self.ttl_s, self.max_age_s, self.teams_dir = ttl_s, max_age_s, teams_dir or self.settings.teams_dir
        # past ttl_s, the last answer is served for up to stale_s more while one refresh runs in the background;
        # 0: the reader past the TTL refreshes and waits (read-your-writes within ttl_s, what tests of a change use)
        self.stale_s = stale_s
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
                    self._index = CandidateIndex(
                        self.tracking_uri, lambda: self.client, self.ttl_s, self.max_age_s, self.stale_s
                    )
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
        if k.on_host:
            return [judge(c, k) for c in host_pool(self.candidates(k.dataset), k)]
        return [judge(c, k) for c in at_operating_point(self.candidates(k.dataset, k.target), k)]

    def get_best(self, constraints: Constraints | str) -> Answer:
        """The best version satisfying the constraints (or a team's, by name); never one whose artifact is gone.

        ``NoFeasibleModelError`` names the nearest misses; ``NoCandidatesError`` says nothing was measured there.
        """
        k = self._constraints(constraints)
        if k.on_host:
            return self._best_on_host(k)
        model, key = names.registered_model_name(k.dataset), k.model_dump_json()
        hit = self._cold(model, key, k)
        if hit is not None:
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

    def _cold(self, model: str, key: str, k: Constraints) -> Answer | None:
        """While the model's index is not loaded: the store's answer (kept per constraints under its watermark).

        None when the store cannot answer, is not sure, finds nothing feasible or its winner's artifact is gone: the
        index answers then, and says why.
        """
        if not self.index.computes_in_store or self.index.loaded(model):
            return None
        light = self.index.light(model)
        hit = light.answers.get(key)
        if hit is None or not self.artifact_ok(hit.candidate, light.verified):
            found = self.index.best_in_store(model, k)
            if found is None or not self.artifact_ok(found[0], light.verified):
                return None
            hit = light.answers[key] = Answer(found[0], found[1], None, k, self)  # a host target's pool: merged later
        if self.prefetch or self.index.over_http:  # over HTTP an answer read again costs seconds: deltas
            self.index.prefetch(model)
        return hit

    def _best_on_host(self, k: Constraints) -> Answer:
        """A host target's answer: each runner's best on the target host, the best of them by ``rank_key``."""
        model, key = names.registered_model_name(k.dataset), k.model_dump_json()
        hit = self._cold(model, key, k)
        if hit is not None:
            return hit
        snap = self.index.snapshot(model)
        cached = snap.answers.get(key)
        if cached is not None and self.artifact_ok(cached.candidate, snap.verified):
            return cached
        host = target_host(snap.candidates, k)
        pools = [snap.ranked_pool(s.model_dump_json(), s) for s in runner_constraints(k, host)] if host else []
        order, best, missing = rank_key(k), None, []
        for pool in pools:
            for at, c in zip(pool.keys, pool.candidates, strict=True):
                if best is not None and at > order(best.candidate):
                    break  # this runner has nothing better than the best so far
                verdict = judge(c, k)
                if verdict.label != "feasible":
                    continue
                if self.artifact_ok(c, snap.verified):
                    best = verdict
                    break
                missing.append(c)
        if not any(pool.candidates for pool in pools):
            raise no_candidates_on_host(k, snap.candidates)
        if best is None:
            raise no_feasible([judge(c, k) for c in merged(pools)], k, missing)
        answer = Answer(best.candidate, best, None, k, self)  # its pool merged from the runners' on first use
        snap.answers[key] = answer
        return answer

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
        artifacts, object stores) is resolved through the registry (a deleted version is refused) and listed through
        MLflow, once per snapshot and version (``verified``, the snapshot's cache: a new one whenever the registry
        moved) and at least every ``max_age_s``: a refresh that finds nothing changed makes no call for it.
        """
        folder = local_dir(candidate.artifact_uri)
        if folder is not None:
            return os.path.isfile(os.path.join(folder, "MLmodel"))
        now = time.monotonic()
        seen = verified.get(candidate.version) if verified is not None else None
        if seen is not None and now - seen[1] < max(self.ttl_s, self.max_age_s):
            return seen[0]
        ok = self._listed_ok(candidate)
        if verified is not None:
            verified[candidate.version] = (ok, now)
        return ok

    def _listed_ok(self, candidate: Candidate) -> bool:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            # always through the registry, whatever the source: it refuses a deleted version, which a search no longer
            # shows but the index may still hold (registry.stores.api); a `models:/m-...` source resolved.
            # The registry client directly: MlflowClient's method first fetches the registered model, which makes
            # the server read every version of it (O(versions) per check)
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

    def deployed(self, candidate: Candidate) -> Path:
        """The local path of the artifact the candidate's runtime deploys, downloaded first when not local.

        The version's ONNX model for the onnxruntime runners; else the run's ``deploy/`` files (OpenVINO IR, an
        ExecuTorch ``.pte``, a LiteRT ``.tflite``, the torch manifest), found by ``evaluators.runners.find_artifact``.
        """
        import mlflow.artifacts

        from evaluators.runners import ONNX_RUNNERS, find_artifact

        if candidate.runner not in ONNX_RUNNERS:
            run = self.client.get_run(candidate.run_id)
            folder = local_dir(run.info.artifact_uri)
            if folder is not None and os.path.isdir(os.path.join(folder, DEPLOY_DIR)):
                return find_artifact(Path(folder) / DEPLOY_DIR)
            path = mlflow.artifacts.download_artifacts(
                run_id=candidate.run_id, artifact_path=DEPLOY_DIR, tracking_uri=self.tracking_uri
            )
            return find_artifact(Path(path))
        folder = local_dir(candidate.artifact_uri)
        if folder is not None and os.path.isdir(folder):
            local = Path(folder)
        else:
            uri, tracking = candidate.uri, self.tracking_uri
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking))
        onnx_files = sorted(local.rglob("*.onnx"))
        if not onnx_files:
            raise FileNotFoundError(f"{candidate.uri} has no .onnx file (downloaded to {local})")
        return onnx_files[0]

    def runner_session(self, candidate: Candidate) -> tuple[Any, Any]:
        """The candidate's runner and a ready session of it on the deployed artifact (``runner.predict`` runs it)."""
        from evaluators.runners import get_runner

        runner = get_runner(candidate.runner)
        return runner, runner.load(self.deployed(candidate))

    def load(self, candidate: Candidate) -> Any:
        """A ready session of the candidate's runtime on its deployed artifact (see :meth:`deployed`)."""
        return self.runner_session(candidate)[1]


DEPLOY_DIR = "deploy"  # where the pipeline logs a non-ONNX runner's artifact on its run (cnnselect.pipeline)


_default: Registry | None = None
_default_guard = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry on the configured tracking URI (``MLFLOW_TRACKING_URI`` or the embedded store).

    Long-lived by nature, so it prefetches: its first ``get_best`` per dataset is computed in the store, and the
    index then loads in the background, after which a registry change costs a delta refresh.
    """
    global _default
    with _default_guard:
        if _default is None:
            _default = Registry(prefetch=True)
    return _default
