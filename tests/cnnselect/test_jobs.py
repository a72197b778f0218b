"""The job's planning steps against a real MLflow store: the cold-start shortlist and the periodic discovery."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from catalog import get_profile
from cnnselect import jobs
from registry.recommend import EDGE_REALTIME


def test_cold_start_measures_the_guides_shortlist_first(
    measured_home: Path, teams_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only teams on this dataset that nothing measured satisfies move their shortlist to the front of the plan."""
    monkeypatch.setenv("CNNSELECT_HOME", str(measured_home))
    monkeypatch.setenv("CNNSELECT_TEAMS_DIR", str(teams_dir))  # camera and server are satisfied; impossible has none
    (teams_dir / "strict-edge.yaml").write_text(
        "name: strict-edge\nconstraints: {target: edge, max_latency_ms: 5, min_top1: 0.99}\n"
    )
    (teams_dir / "elsewhere.yaml").write_text(
        "name: elsewhere\nconstraints: {target: cpu, dataset: other, dataset_size: 200000, min_top1: 0.99}\n"
    )
    (teams_dir / "broken.yaml").write_text("name: broken\nconstraints: {target: nowhere}\n")  # skipped, not fatal
    smoke = list(get_profile("smoke").models)
    digits = {"name": "digits"}

    assert jobs.cold_start_shortlist("digits") == EDGE_REALTIME
    assert jobs.plan("smoke", dataset=digits, cold_start=True) == [*EDGE_REALTIME, *smoke]
    assert jobs.plan("smoke", dataset=digits) == smoke  # off by default (the CLI's sweeps)
    assert jobs.plan("smoke", ["resnet18.tv_in1k"], dataset=digits, cold_start=True) == ["resnet18.tv_in1k"]
    with pytest.raises(ValueError, match="need the dataset"):
        jobs.plan("smoke", cold_start=True)


def test_discovery_plans_same_family_variants_and_new_tags_not_yet_measured(measured_home: Path) -> None:
    """The periodic "pull the CNN families" step, offline: the catalog plus the installed timm's pretrained tags."""
    import timm

    from registry.settings import Settings

    found = jobs.discover(["resnet18.tv_in1k"], "digits", Settings(home=measured_home))
    assert "resnet18.tv_in1k" not in found  # already planned
    assert {"resnet34.tv_in1k", "resnet50.tv_in1k"} <= set(found)  # same family, in the catalog
    new_tags = set(timm.list_pretrained("resnet18.*")) - {"resnet18.tv_in1k"}
    assert new_tags and new_tags <= set(found)  # e.g. resnet18.a1_in1k: tags the catalog does not list yet
    assert all(not n.startswith("efficientnet") for n in found)  # other families stay out


def test_discovery_runs_on_cron_runs_by_default_and_is_capped(measured_home: Path) -> None:
    from registry.settings import Settings

    assert jobs.discovery_on("scheduled", "scheduled") and not jobs.discovery_on("scheduled", "manual")
    assert jobs.discovery_on("always", "manual") and not jobs.discovery_on("never", "scheduled")
    with pytest.raises(ValueError, match="valid: scheduled, always, never"):
        jobs.discovery_on("sometimes", "manual")
    settings = Settings(home=measured_home)
    planned = jobs.plan(
        "smoke", ["resnet18.tv_in1k"], {"name": "digits"}, discover_new=True, discover_limit=2, settings=settings
    )
    assert planned[0] == "resnet18.tv_in1k" and len(planned) == 3


def test_a_cron_run_started_long_after_its_slot_plans_nothing() -> None:
    from datetime import datetime, timedelta

    slot = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert jobs.missed_slot("scheduled", slot, slot + timedelta(hours=7), 60)  # unpaused at 10:00: not tonight's
    assert not jobs.missed_slot("scheduled", slot, slot + timedelta(minutes=5), 60)  # on time
    assert not jobs.missed_slot("manual", slot, slot + timedelta(hours=7), 60)  # a person asked: always runs
    assert not jobs.missed_slot("scheduled", None, slot, 60)
