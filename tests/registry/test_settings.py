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
