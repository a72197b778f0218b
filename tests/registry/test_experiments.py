"""One create-or-get for every experiment cnnselect makes: evaluations, reports, promotions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class _LateClient:
    """A client that does not see the experiment on its first look: another process creates it in between."""

    def __init__(self, client: Any) -> None:
        self.client, self.looks = client, 0

    def get_experiment_by_name(self, name: str) -> Any:
        self.looks += 1
        return None if self.looks == 1 else self.client.get_experiment_by_name(name)

    def create_experiment(self, name: str, **kw: Any) -> str:
        return self.client.create_experiment(name, **kw)


def test_created_once_with_location_and_tags_and_a_lost_race_reads_the_winner(tmp_path: Path) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from registry.writes import get_or_create_experiment

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    location = (tmp_path / "art").as_uri()
    first = get_or_create_experiment(client, "cnnselect/x", location, {"cnnselect.dataset": "x"})
    exp = client.get_experiment(first)
    assert exp.artifact_location == location and exp.tags["cnnselect.dataset"] == "x"
    assert get_or_create_experiment(client, "cnnselect/x", None) == first
    late = _LateClient(client)
    assert get_or_create_experiment(late, "cnnselect/x", location) == first and late.looks == 2

    class Broken(_LateClient):
        def create_experiment(self, name: str, **kw: Any) -> str:
            raise MlflowException("store refused")

    with pytest.raises(MlflowException, match="store refused"):  # not created by anyone: the error, not a None id
        get_or_create_experiment(Broken(client), "cnnselect/never", location)
