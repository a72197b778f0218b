"""Where experiments cnnselect creates keep their artifacts, per kind of store."""

from pathlib import Path

import pytest

from registry.settings import Settings


@pytest.mark.parametrize(
    ("uri", "under_home"),
    [
        ("sqlite:////tmp/x/mlflow.db", True),
        ("postgresql+psycopg2://u@db:5432/mlflow", True),  # opened directly: not ./mlruns of the working directory
        ("http://mlflow:5000", False),  # the server's own --artifacts-destination
        ("https://mlflow.example.com", False),
    ],
)
def test_artifact_location_per_store(uri: str, under_home: bool, tmp_path: Path) -> None:
    s = Settings(home=tmp_path, tracking_uri=uri)
    got = s.artifact_location("digits")
    assert (got == (tmp_path / "mlartifacts" / "digits").resolve().as_uri()) if under_home else got is None


def test_artifact_uri_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNSELECT_ARTIFACT_URI", "s3://bucket/cnnselect/")
    s = Settings(home=tmp_path, tracking_uri="http://mlflow:5000")
    assert s.artifact_location("digits", "reports") == "s3://bucket/cnnselect/digits/reports"


def test_every_cnnselect_variable_is_a_settings_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "CNNSELECT_TEAMS_DIR": str(tmp_path),
        "CNNSELECT_TRACKING_RETRY_SECONDS": "7",
        "CNNSELECT_GATE_MAX_LATENCY_COV": "0.25",
        "CNNSELECT_LATENCY_LOCK": str(tmp_path / "l.lock"),
        "CNNSELECT_LOAD_TIMEOUT_S": "9",
        "CNNSELECT_LOAD_MEMORY_MB": "512",
        "CNNSELECT_EVALUATION_SCHEDULE": "none",
        "CNNSELECT_QUEUES": " default, edge ,,",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.teams_dir, s.tracking_retry_seconds, s.gate_max_latency_cov, s.latency_lock) == (
        tmp_path, 7.0, 0.25, tmp_path / "l.lock",
    )  # fmt: skip
    assert (s.load_timeout_s, s.load_memory_mb, s.evaluation_schedule, s.deployed_queues) == (
        9.0, 512, "none", ["default", "edge"],
    )  # fmt: skip
    monkeypatch.setenv("CNNSELECT_TEAMS_DIR", "")  # empty is unset: the packaged teams, as before
    assert Settings().teams_dir is None


def test_the_lower_layers_defaults_are_the_settings_defaults() -> None:
    """catalog and evaluators never import registry: the value comes in from Settings, their defaults agree."""
    from catalog.weights import LoadLimits
    from evaluators.gates import ResultsGateConfig
    from evaluators.latency import DEFAULT_LOCK

    fields = Settings.model_fields
    assert ResultsGateConfig().max_latency_cov == fields["gate_max_latency_cov"].default
    assert fields["latency_lock"].default == DEFAULT_LOCK
    assert (LoadLimits().timeout_s, LoadLimits().memory_mb) == (
        fields["load_timeout_s"].default, fields["load_memory_mb"].default,
    )  # fmt: skip


def test_every_setting_is_in_the_readme_table() -> None:
    from tests.conftest import REPO

    table = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [f"CNNSELECT_{f.upper()}" for f in Settings.model_fields if f"`CNNSELECT_{f.upper()}`" not in table]
    assert missing == []
