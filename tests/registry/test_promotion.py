"""Promotion against real MLflow stores (SQLite and PostgreSQL): cold start, idempotence, anti-flapping, history,
staleness, deletion and two promotions racing for one team."""

import json
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import NoChampionError, PromotionLockedError, names
from registry.client import Registry
from registry.promotion import history, promote, team_lock
from registry.recommend import recommend
from registry.teams import load_team


def write_team(folder: Path, name: str, ds: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nconstraints:\n  dataset: {ds}\n  target: cpu\n  min_top1: 0.8\n  max_latency_ms: 5\n"
        f"  dataset_size: 50000\n{extra}promotion:\n  margin: 0.02\n"
    )
    return folder


@pytest.fixture
def reg(shared_store, tmp_path: Path, ds: str) -> Registry:
    write_team(tmp_path / "teams", "vision", ds)
    return Registry(settings=shared_store, teams_dir=tmp_path / "teams", ttl_s=0, stale_s=0)


def test_cold_start_promote_idempotent_anti_flapping_stale(reg: Registry, add_version, ds: str) -> None:
    first = promote("vision", reg)
    assert first.action == "none" and first.champion is None
    assert (
        list(first.shortlist)
        == recommend(reg.team("vision").constraints)
        == [
            "resnet50.tv_in1k",
            "efficientnet_b2.ra_in1k",
        ]
    )

    v1 = add_version(ds, "a", top1=0.90, top1_ci_low=0.88, top1_ci_high=0.92)
    d = promote("vision", reg, sweep="s1")
    assert (d.action, d.previous, d.champion) == ("promoted", None, v1) and d.reason == "no champion yet"
    assert reg.get_champion("vision").candidate.version == v1
    assert promote("vision", reg).action == "kept"  # idempotent: nothing new, no move, no record
    assert len(history("vision", reg)) == 1

    add_version(ds, "b", top1=0.91, top1_ci_low=0.89, top1_ci_high=0.93)  # better, but within noise and margin
    kept = promote("vision", reg)
    assert kept.action == "kept" and "does not beat champion" in kept.reason
    assert reg.get_best("vision").candidate.variant == "b"  # the read path answers the best; the alias stays put
    assert reg.get_champion("vision").candidate.version == v1

    v3 = add_version(ds, "c", top1=0.97, top1_ci_low=0.95, top1_ci_high=0.98)
    d3 = promote("vision", reg, sweep="s2")
    assert (d3.action, d3.previous, d3.champion) == ("promoted", v1, v3)
    assert "declared margin" in d3.reason

    v4 = add_version(ds, "d", fingerprint="fp2", top1=0.85, top1_ci_low=0.83, top1_ci_high=0.87)  # new hardware
    d4 = promote("vision", reg)
    assert d4.action == "promoted" and d4.champion == v4 and "stale" in d4.reason and "fp2" in d4.reason

    moves = history("vision", reg)
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(v3, v4), (v1, v3), (None, v1)]
    client = MlflowClient(reg.tracking_uri)
    mv1 = client.get_model_version(names.registered_model_name(ds), v1)
    assert mv1.tags[names.promotion_tag("vision", "demoted_by")] == moves[1]["run_id"]
    assert (
        client.get_model_version(names.registered_model_name(ds), v4).tags[names.promotion_tag("vision", "run_id")]
        == moves[0]["run_id"]
    )
    ev = json.loads(Path(client.download_artifacts(moves[1]["run_id"], "evidence.json")).read_text())
    assert ev["winner"]["version"] == v3 and ev["previous_champion"]["version"] == v1
    assert ev["runner_up"]["variant"] == "b" and ev["constraints"]["min_top1"] == 0.8
    assert {k: str(v) for k, v in client.get_registered_model(names.registered_model_name(ds)).aliases.items()} == {
        "team-vision": v4
    }


def test_a_decision_reads_as_a_block_naming_models_and_figures(reg: Registry, add_version, ds: str) -> None:
    assert promote("vision", reg).describe()[:4] == [
        "vision: none",
        "  champion:   none",
        "  challenger: none",
        "  why:",
    ]
    v1 = add_version(ds, "a", top1=0.90, top1_ci_low=0.88, top1_ci_high=0.92)
    lines = promote("vision", reg).describe()
    assert lines == ["vision: promoted", f"  champion:   none -> a v{v1}", f"  challenger: a v{v1}", "  why:",
                     "    no champion yet"]  # fmt: skip
    v2 = add_version(ds, "b", top1=0.91, top1_ci_low=0.89, top1_ci_high=0.93)
    kept = promote("vision", reg).describe()
    assert kept[:3] == ["vision: kept", f"  champion:   a v{v1} (kept)", f"  challenger: b v{v2}"]
    assert "    top1: challenger top1 0.91 (interval 0.89-0.93), champion top1 0.9 (interval 0.88-0.92)" in kept
    assert all("None" not in line for line in kept)


def test_infeasible_or_deleted_champion_is_replaced(reg: Registry, add_version, ds: str, tmp_path: Path) -> None:
    v1 = add_version(ds, "a", top1=0.95, top1_ci_low=0.93, top1_ci_high=0.97)
    v2 = add_version(ds, "b", top1=0.90, top1_ci_low=0.88, top1_ci_high=0.92, latency_p95_ub_ms=3.0)
    assert promote("vision", reg).champion == v1

    write_team(tmp_path / "teams", "vision", ds, "  max_params_m: 0.5\n")  # the team tightens a budget: v1 fails it
    add_version(ds, "small", top1=0.86, top1_ci_low=0.84, top1_ci_high=0.88, params_m=0.3)
    d = promote("vision", reg)
    assert d.action == "promoted" and "became infeasible" in d.reason and "max_params_m" in d.reason

    write_team(tmp_path / "teams", "vision", ds)
    assert promote("vision", reg).action == "promoted"  # back to v1: the best, and the champion "small" is beaten
    MlflowClient(reg.tracking_uri).delete_model_version(names.registered_model_name(ds), v1)
    with pytest.raises(NoChampionError, match="run `cnnselect promote vision`"):
        reg.get_champion("vision")
    assert reg.get_best("vision").candidate.version == v2  # never the deleted version
    d = promote("vision", reg)
    assert d.action == "promoted" and d.champion == v2 and d.previous is None  # MLflow dropped the alias with it


def test_two_concurrent_promotions_move_the_alias_once(reg: Registry, add_version, ds: str) -> None:
    v1 = add_version(ds, "a")
    start = threading.Barrier(2)
    out: list = []

    def run() -> None:
        mine = Registry(settings=reg.settings, teams_dir=reg.teams_dir, ttl_s=0, stale_s=0)  # separate clients
        start.wait()
        out.append(promote("vision", mine))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d.action for d in out) == ["kept", "promoted"]
    assert [m["to_version"] for m in history("vision", reg)] == [v1]


def test_the_team_lock_is_exclusive(reg: Registry, add_version, ds: str) -> None:
    add_version(ds, "a")
    other = Registry(settings=reg.settings, teams_dir=reg.teams_dir, ttl_s=0, stale_s=0)
    with team_lock(reg, "vision") as how:
        assert how == ("postgresql-advisory-lock" if reg.tracking_uri.startswith("postgresql") else "file-lock")
        with pytest.raises(PromotionLockedError, match="a promotion for team 'vision' is running"):
            promote("vision", other, blocking=False)
    assert promote("vision", other, blocking=False).action == "promoted"
    assert load_team("vision", reg.teams_dir).name == "vision"


def test_a_host_team_moves_its_alias_to_the_chosen_runtimes_version(
    shared_store, add_version, ds: str, tmp_path: Path
) -> None:
    """A team YAML with ``target: cpu-host`` validates; promotion follows the runtime the host target chooses."""
    host = "cpu-0123456789ab"
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "fast.yaml").write_text(
        f"name: fast\nconstraints:\n  dataset: {ds}\n  target: cpu-host\n  runtimes: [cpu, openvino-int8]\n"
        "  max_latency_ms: 5\n  objective: latency\n"
    )
    reg = Registry(settings=shared_store, teams_dir=teams, ttl_s=0, stale_s=0)
    assert load_team("fast", teams).constraints.runners == ("cpu", "openvino-int8")
    ort = add_version(ds, "m", "cpu", "fp-ort", host=host, latency_p95_ms=3.0, latency_p95_ub_ms=3.2)
    d = promote("fast", reg)
    assert (d.action, d.champion) == ("promoted", ort)
    ov = add_version(ds, "m", "openvino-int8", "fp-ov", host=host, latency_p95_ms=1.0, latency_p95_ub_ms=1.1)
    add_version(ds, "m", "executorch-xnnpack-fp32", "fp-et", host=host, latency_p95_ms=0.5, latency_p95_ub_ms=0.6)
    d = promote("fast", reg)  # executorch is faster still, but not among the team's runtimes
    assert (d.action, d.previous, d.champion) == ("promoted", ort, ov) and "upper bound 1.1 ms < champion" in d.reason
    champion = reg.get_champion("fast")
    assert (champion.candidate.version, champion.runtime, champion.precision, champion.host) == (
        ov, "openvino-int8", "int8", host
    )  # fmt: skip
    model = names.registered_model_name(ds)
    assert str(MlflowClient(reg.tracking_uri).get_model_version_by_alias(model, "team-fast").version) == ov
    assert promote("fast", reg).action == "kept"
