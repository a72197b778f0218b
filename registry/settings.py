"""Typed settings read from the environment (prefix ``CNNSELECT_``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():  # a source checkout (editable install): keep data beside the code
        return repo / ".cnnselect"
    return Path.home() / ".cnnselect"


class Settings(BaseSettings):
    """Where cnnselect keeps its data and which MLflow it talks to.

    ``CNNSELECT_HOME`` holds the datasets, the tensor cache and (by default) the SQLite MLflow store;
    ``MLFLOW_TRACKING_URI`` (MLflow's own variable) or ``CNNSELECT_TRACKING_URI`` points at another store or server.
    """

    model_config = SettingsConfigDict(env_prefix="CNNSELECT_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    tracking_uri: str | None = None
    dataset_dir: Path | None = None
    artifact_uri: str | None = None  # CNNSELECT_ARTIFACT_URI: root for experiments cnnselect creates (path, s3://...)
    seed: int = 0
    max_quarantined_fraction: float = 0.1  # CNNSELECT_MAX_QUARANTINED_FRACTION: more of a split quarantined fails
    # CNNSELECT_INT8_MAX_TOP1_DROP: top-1 (a fraction) an INT8 artifact may lose against FP32 on the calibration split
    # before the runner's accuracy-controlled recipe is tried; a team's stricter max_top1_drop tightens it
    int8_max_top1_drop: float = 0.01
    # CNNSELECT_TEAMS_DIR: the folder of team YAML files; unset or empty = the packaged ones (cnnselect/teams/)
    teams_dir: Path | None = None
    # CNNSELECT_TRACKING_RETRY_SECONDS: how long a write or read retries while the store is busy or unreachable
    tracking_retry_seconds: float = 120.0
    # CNNSELECT_GATE_MAX_LATENCY_COV: the results gate's bound on the latency CoV when the windows did not agree
    gate_max_latency_cov: float = 0.5
    latency_lock: Path = Path("/tmp/cnnselect-latency.lock")  # CNNSELECT_LATENCY_LOCK: no two measurements overlap
    # CNNSELECT_LOAD_TIMEOUT_S / CNNSELECT_LOAD_MEMORY_MB: the child that parses an outside checkpoint (0 MB: 4 GiB,
    # torch's own, plus 4x the file)
    load_timeout_s: float = 300.0
    load_memory_mb: int = 0
    # CNNSELECT_EVALUATION_SCHEDULE: cron of cnn_evaluation, read when the DAG file is parsed; "none" = manual only
    evaluation_schedule: str = "0 3 * * *"
    queues: str = "default"  # CNNSELECT_QUEUES: comma-separated Celery queues this deployment runs workers for

    @field_validator("teams_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @property
    def deployed_queues(self) -> list[str]:
        """``queues`` as a list, blanks dropped."""
        return [q.strip() for q in self.queues.split(",") if q.strip()]

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def missing_local_store(self) -> Path | None:
        """The SQLite file the store URI names, when it does not exist (opening it would create an empty one)."""
        uri = self.resolved_tracking_uri
        if not uri.startswith("sqlite:///"):
            return None
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if not path or path == ":memory:" or Path(path).exists():
            return None
        return Path(path)

    def require_store(self) -> None:
        """Refuse to read a local store that does not exist yet, instead of creating an empty one to read from.

        Raises ``NothingMeasuredError`` saying what to run first; a server or database store is never checked here.
        """
        from registry.errors import NothingMeasuredError

        missing = self.missing_local_store
        if missing is not None:
            raise NothingMeasuredError(
                f"nothing is measured yet: there is no MLflow store at {missing} (CNNSELECT_HOME={self.home}). "
                "Run `cnnselect demo` (the bundled digits, a few minutes on a CPU) or "
                "`cnnselect evaluate --dataset <ImageFolder root with train/calibration/heldout>` first, or point "
                "MLFLOW_TRACKING_URI at the store that holds the measurements.",
                missing,
            )

    @property
    def is_local_store(self) -> bool:
        return urlparse(self.resolved_tracking_uri).scheme in ("sqlite", "file", "")

    @property
    def opens_store_directly(self) -> bool:
        """This process opens the store itself (SQLite, PostgreSQL, ...), not through a tracking server."""
        scheme = urlparse(self.resolved_tracking_uri).scheme.split("+")[0]
        return scheme in ("sqlite", "file", "", "postgresql", "mysql", "mssql")

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    def artifact_location(self, *parts: str) -> str | None:
        """Where an experiment cnnselect creates keeps its artifacts.

        Under ``CNNSELECT_ARTIFACT_URI`` when set; else, on a store this process opens directly, under
        ``home/mlartifacts`` (MLflow's own default there is ``./mlruns`` of whatever directory the process runs in);
        a tracking server chooses its own (None).
        """
        if self.artifact_uri:
            return "/".join([self.artifact_uri.rstrip("/"), *parts])
        if self.opens_store_directly:
            return self.artifact_root.joinpath(*parts).resolve().as_uri()
        return None

    @property
    def default_dataset_dir(self) -> Path:
        return self.dataset_dir or self.home / "datasets" / "digits"

    @property
    def manifest_dir(self) -> Path:
        """Dataset manifests, one per dataset folder: never written into the dataset itself (it may be read-only)."""
        return self.home / "manifests"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"
