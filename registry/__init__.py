"""cnnselect's registry: measurements in MLflow, constraints in, the best registered model out.

``registry.get_best(...)`` sits on a default :class:`Registry` the way ``mlflow.*`` sits on ``MlflowClient``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.errors import InvalidNameError, NoCandidatesError, NoFeasibleModelError, RegistryError

if TYPE_CHECKING:
    from registry.client import Answer, Registry
    from registry.constraints import Constraints

__all__ = [
    "Answer",
    "Constraints",
    "InvalidNameError",
    "NoCandidatesError",
    "NoFeasibleModelError",
    "Registry",
    "RegistryError",
    "default_registry",
    "get_best",
]

_default: Registry | None = None


def __getattr__(name: str) -> Any:  # lazy public imports: `import registry` stays cheap
    if name == "Constraints":
        from registry.constraints import Constraints

        return Constraints
    if name in ("Registry", "Answer"):
        from registry import client

        return getattr(client, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def default_registry() -> Registry:
    """The process-wide registry on the configured tracking URI (``MLFLOW_TRACKING_URI`` or the embedded store)."""
    global _default
    from registry.client import Registry

    if _default is None:
        _default = Registry()
    return _default


def get_best(constraints: Constraints) -> Answer:
    """The best registered model satisfying ``constraints`` (see :meth:`Registry.get_best`)."""
    return default_registry().get_best(constraints)
