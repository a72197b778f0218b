"""Teams: one YAML file each under ``cnnselect/teams/`` (or ``CNNSELECT_TEAMS_DIR``), validated by ``Constraints``.

A file holds the team's name, a description, its constraints and its promotion policy::

    name: mobile-app
    description: Android/iOS app, on-device INT8
    constraints: {target: edge, deployment: mobile, max_latency_ms: 10, max_params_m: 6, min_top1: 0.8}
    promotion: {margin: 0.01}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from registry.constraints import Constraints, StrictModel
from registry.errors import InvalidTeamError, UnknownTeamError
from registry.names import validate_team_name
from registry.settings import Settings

DEFAULT_TEAMS_DIR = Path(__file__).resolve().parents[1] / "cnnselect" / "teams"


class PromotionPolicy(StrictModel):
    """When a challenger may replace the champion (anti-flapping)."""

    margin: float = Field(
        0.0, ge=0, description="the challenger must win by more than this on the objective (top-1 in fraction, ms, MB)"
    )
    require_disjoint_intervals: bool = Field(
        True, description="also accept a win whose confidence intervals do not overlap the champion's"
    )


class Team(StrictModel):
    name: str
    description: str = ""
    constraints: Constraints
    promotion: PromotionPolicy = Field(default_factory=lambda: PromotionPolicy.model_validate({}))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_team_name(v)


def teams_dir(path: str | Path | None = None, settings: Settings | None = None) -> Path:
    """``path``, else ``CNNSELECT_TEAMS_DIR`` (``Settings.teams_dir``), else the packaged teams."""
    return Path(path or (settings or Settings()).teams_dir or DEFAULT_TEAMS_DIR)


def parse_team(path: Path) -> Team:
    """One team file; every error names the file and what would have been valid."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidTeamError(f"{path}: cannot read team file: {exc}", path) from exc
    if not isinstance(data, dict):
        raise InvalidTeamError(f"{path}: expected a mapping with name, description, constraints, promotion", path)
    try:
        team = Team.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {_msg(e['msg'])}" for e in exc.errors()]
        raise InvalidTeamError(f"{path}: invalid team file\n" + "\n".join(lines), path) from exc
    if team.name != path.stem:
        raise InvalidTeamError(f"{path}: team name {team.name!r} must match the file name {path.stem!r}", path)
    return team


def _msg(text: str) -> str:
    return text.removeprefix("Value error, ")  # pydantic's wrapping of our own ValueError messages


@dataclass(frozen=True)
class TeamScan:
    """Every team file of a folder: the teams that validate and, for each file that does not, its error."""

    teams: list[Team]
    errors: list[InvalidTeamError]

    def error(self) -> InvalidTeamError | None:
        """One error naming every bad file (each with its key and what is valid), or None when all validate."""
        if not self.errors:
            return None
        total = len(self.teams) + len(self.errors)
        head = f"{len(self.errors)} of {total} team files do not validate:"
        return InvalidTeamError("\n".join([head, *(str(e) for e in self.errors)]))


def scan_teams(path: str | Path | None = None) -> TeamScan:
    """Parse every ``*.yaml`` of the folder; a bad file is reported, never a reason to skip the good ones."""
    teams, errors = [], []
    for file in sorted(teams_dir(path).glob("*.yaml")):
        try:
            teams.append(parse_team(file))
        except InvalidTeamError as exc:
            errors.append(exc)
    return TeamScan(teams, errors)


def list_teams(path: str | Path | None = None) -> list[Team]:
    """Every team of the folder; ``InvalidTeamError`` lists every file that does not validate (not just the first)."""
    scan = scan_teams(path)
    bad = scan.error()
    if bad is not None:
        raise bad
    return scan.teams


def load_team(name: str, path: str | Path | None = None) -> Team:
    validate_team_name(name)
    folder = teams_dir(path)
    file = folder / f"{name}.yaml"
    if not file.exists():
        raise UnknownTeamError(name, [p.stem for p in sorted(folder.glob("*.yaml"))])
    return parse_team(file)
