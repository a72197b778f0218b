"""Team files validate through Constraints with errors that say what would have been valid; the cold-start shortlist
follows the selection guide's decision tree."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from registry import InvalidNameError, InvalidTeamError, UnknownTeamError
from registry.constraints import Constraints
from registry.recommend import recommend
from registry.teams import list_teams, load_team, scan_teams


def test_shipped_teams_validate() -> None:
    teams = {t.name: t for t in list_teams()}
    assert set(teams) == {"mobile-app", "edge-camera", "cloud-vision"}
    assert teams["mobile-app"].constraints.target == "edge" and teams["mobile-app"].constraints.objective == "latency"
    assert teams["edge-camera"].constraints.weights == {"top1": 100, "latency": 1}
    assert teams["cloud-vision"].constraints.effective_precision == "fp32"


def _team(tmp_path: Path, body: str, name: str = "t") -> Path:
    (tmp_path / f"{name}.yaml").write_text(body)
    return tmp_path


def test_a_host_team_validates(tmp_path: Path) -> None:
    body = "name: t\nconstraints: {target: cpu-host, runtimes: [openvino-int8, cpu], precisions: [int8]}\n"
    k = load_team("t", _team(tmp_path, body)).constraints
    assert k.on_host and k.runners == ("openvino-int8",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: t\nconstraints: {max_latency: 5}\n", r"key 'max_latency'. Did you mean 'max_latency_ms'"),
        ("name: t\nconstrains: {}\n", r"unknown Team key 'constrains'. Did you mean 'constraints'"),
        ("name: t\nconstraints: {target: tpu}\n", r"unknown target runner 'tpu'; known runners: cpu, edge"),
        ("name: t\nconstraints: {target: cpu-hst}\n", r"known hosts: cpu-host, gpu-host. Did you mean 'cpu-host'"),
        (
            "name: t\nconstraints: {target: cpu-host, runtimes: [openvino]}\n",
            r"constraints: unknown cpu-host runtime 'openvino'. Did you mean .* Valid: cpu, edge",
        ),
        ("name: t\nconstraints: {runtimes: [cpu]}\n", r"runtimes narrows a host target"),
        ("name: t\nconstraints: {max_size_mb: -3}\n", r"constraints.max_size_mb: Input should be greater than 0"),
        ("name: t\nconstraints: {target: edge, precision: fp32}\n", r"precision 'fp32' but target 'edge'"),
        ("name: t\nconstraints: {precisions: [int8]}\n", r"contradictory: target 'cpu' runs 'fp32', not in allowed"),
        ("name: t\nconstraints: {families: [mobilnetv3]}\n", r"family 'mobilnetv3'. Did you mean 'mobilenetv3'"),
        ("name: t\nconstraints: {task: segmentation}\n", r"task 'segmentation' is not supported yet"),
        ("name: t\nconstraints: {objective: weighted}\n", r"objective 'weighted' needs non-zero weights"),
        ("name: t\nconstraints: {weights: {top1: 1}}\n", r"weights given but objective is 'top1'"),
        ("name: t\nconstraints: {objective: size, tie_breakers: [size]}\n", r"tie_breakers include the objective"),
        ("name: x\nconstraints: {}\n", r"team name 'x' must match the file name 't'"),
        ("name: t\nconstraints: {}\npromotion: {margin: -1}\n", r"promotion.margin: Input should be greater than"),
    ],
)
def test_bad_team_files_are_refused_with_what_is_valid(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InvalidTeamError, match=message):
        load_team("t", _team(tmp_path, body))


def test_every_bad_file_is_reported_and_the_good_ones_kept(tmp_path: Path) -> None:
    _team(tmp_path, "name: good\nconstraints: {}\n", "good")
    _team(tmp_path, "name: a\nconstraints: {max_latency: 5}\n", "a")
    _team(tmp_path, "name: b\nconstraints: {min_top1: 95}\n", "b")
    scan = scan_teams(tmp_path)
    assert [t.name for t in scan.teams] == ["good"]
    assert [e.path.name for e in scan.errors if e.path] == ["a.yaml", "b.yaml"]
    with pytest.raises(
        InvalidTeamError, match=r"(?s)2 of 3 team files do not validate:.*a\.yaml.*'max_latency_ms'.*b\.yaml.*0\.95\?"
    ):
        list_teams(tmp_path)


def test_team_names_and_unknown_teams(tmp_path: Path) -> None:
    _team(tmp_path, "name: vision\nconstraints: {}\n", "vision")
    with pytest.raises(UnknownTeamError, match=r"unknown team 'visoin'. Did you mean 'vision'\? Known teams: vision"):
        load_team("visoin", tmp_path)
    with pytest.raises(InvalidNameError, match="invalid team name"):
        load_team("Vision.Team", tmp_path)  # a dot is no valid MLflow alias character
    with pytest.raises(InvalidNameError):
        load_team("../etc", tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"target": "edge", "max_latency_ms": 8}, ["mobilenetv3_small_100.lamb_in1k", "efficientnet_lite0.ra_in1k"]),
        ({"target": "edge", "max_latency_ms": 30}, ["mobilenetv3_large_100.ra_in1k", "tf_efficientnet_lite2.in1k"]),
        ({"target": "edge"}, ["efficientnet_b0.ra_in1k", "resnet18.tv_in1k"]),
        ({"deployment": "mobile"}, ["mobilenetv3_small_100.lamb_in1k", "mobilenetv3_large_100.ra_in1k"]),
        ({"dataset_size": 5000}, ["resnet18.tv_in1k", "efficientnet_b0.ra_in1k"]),
        ({"dataset_size": 500_000, "max_params_m": 30}, ["efficientnet_b4.ra2_in1k"]),
        ({"dataset_size": 50_000, "families": ["resnet"]}, ["resnet50.tv_in1k"]),
    ],
)
def test_cold_start_follows_the_guide(kwargs: dict, expected: list[str]) -> None:
    assert recommend(Constraints(**kwargs)) == expected


def test_contradictions_in_code_too() -> None:
    with pytest.raises(ValidationError, match="families is empty"):
        Constraints(families=())
    with pytest.raises(ValidationError, match="greater than 0"):
        Constraints(batch_size=0)
