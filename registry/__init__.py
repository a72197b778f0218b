"""cnnselect's registry: measurements in MLflow, constraints in, the best registered model out.

``registry.get_best(...)`` sits on a default :class:`Registry` the way ``mlflow.*`` sits on ``MlflowClient``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.errors import (
    InvalidNameError,
    InvalidTeamError,
    NoCandidatesError,
    NoChampionError,
    NoFeasibleModelError,
    NothingMeasuredError,
    PromotionLockedError,
    RegistryError,
    UnknownTeamError,
)

if TYPE_CHECKING:
    from registry.client import Answer, Registry
    from registry.constraints import Constraints
    from registry.promotion import Decision
    from registry.teams import Team

__all__ = [
    "Answer",
    "Constraints",
    "InvalidNameError",
    "InvalidTeamError",
    "NoCandidatesError",
    "NoChampionError",
    "NoFeasibleModelError",
    "NothingMeasuredError",
    "PromotionLockedError",
    "Registry",
    "RegistryError",
    "Team",
    "UnknownTeamError",
    "default_registry",
    "get_best",
    "get_champion",
    "promote",
    "recommend",
]


def __getattr__(name: str) -> Any:  # lazy public imports: `import registry` stays cheap
    if name == "Constraints":
        from registry.constraints import Constraints

        return Constraints
    if name == "Team":
        from registry.teams import Team

        return Team
    if name in ("Registry", "Answer"):
        from registry import client

        return getattr(client, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def default_registry() -> Registry:
    """The process-wide registry on the configured tracking URI (see :func:`registry.client.default_registry`)."""
    from registry.client import default_registry as default

    return default()


def get_best(constraints: Constraints | str) -> Answer:
    """The best registered model satisfying ``constraints``, or a team's by name (see :meth:`Registry.get_best`)."""
    return default_registry().get_best(constraints)


def get_champion(team: str) -> Answer:
    """The version the team's alias points at (see :meth:`Registry.get_champion`)."""
    return default_registry().get_champion(team)


def recommend(constraints: Constraints | str) -> list[str]:
    """Cold start: the selection guide's rule-based shortlist of catalog names."""
    return default_registry().recommend(constraints)


def promote(team: str) -> Decision:
    """Move the team's alias to its winner when the anti-flapping rule allows (:func:`registry.promotion.promote`)."""
    from registry.promotion import promote as _promote

    return _promote(team, default_registry())
