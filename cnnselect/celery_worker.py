"""A Celery worker's configuration: Airflow's own, after importing what every measuring task imports.

Airflow 3's Celery worker runs each task instance in a process forked from its pool process (the task supervisor's
``os.fork``), so every ``measure_*`` task imported torch, timm, ONNX's exporter, onnxruntime, MLflow and Great
Expectations again before doing any work: about 12 s a task on a 2-core machine (``bench/dag_overhead.py`` times it).
Imported here, in the worker's main process before its pool forks, they are inherited by every task (copy-on-write)
instead. Nothing is initialised beyond the imports (no thread pool, no session, no MLflow client), so forking after
them is as safe as forking after importing Airflow.

A worker opts in with ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=cnnselect.celery_worker.CELERY_CONFIG``
(``docker-compose.yml`` sets it on the workers only: the scheduler and the api-server build the same Celery app
without paying for these imports).
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

log = logging.getLogger(__name__)

# What a measuring task imports that costs more than a few milliseconds, in the order it imports them
PRELOAD = (
    "numpy",
    "PIL.Image",
    "torch",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",
    "torch.onnx._internal.exporter._core",  # the dynamo exporter ``torch.onnx.export`` imports at its first call
    "torch._functorch.aot_autograd",  # and what it traces with
    "onnxscript",
    "pandas",
    "mlflow",
    "mlflow.onnx",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",  # a SQL tracking URI's store (over HTTP the REST store costs nothing)
)


def preload() -> dict[str, float]:
    """Import :data:`PRELOAD` and Great Expectations, make MLflow's package map; the seconds each took.

    A module that fails to import is logged and left to the task, which then reports the error where it belongs.
    """
    seconds: dict[str, float] = {}
    for name in PRELOAD:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  # the task imports it again and fails with its own message
            log.warning("cnnselect worker: could not preload %s (%s); its tasks import it themselves", name, exc)
            continue
        seconds[name] = time.perf_counter() - t
    from evaluators.gates import import_gx

    t = time.perf_counter()
    import_gx()
    seconds["great_expectations"] = time.perf_counter() - t
    t = time.perf_counter()
    if _mlflow_package_map():
        seconds[PACKAGE_MAP] = time.perf_counter() - t
    return seconds


PACKAGE_MAP = "MLflow's package map"


def _mlflow_package_map() -> bool:
    """MLflow's map of every installed distribution to its modules, made once here instead of in each task.

    ``log_model`` checks the model's pip requirements against the environment through it, and a process makes it
    at its first ``log_model`` by reading every installed distribution's file list: about 1 s on this machine, paid
    by every forked measuring task, whose map dies with it. It is a plain dict, safe to inherit. The helper is
    MLflow's private one: when a release drops it, nothing is made here and each task makes the map itself.
    """
    try:
        from mlflow.utils import requirements_utils

        make = getattr(requirements_utils, "_init_modules_to_packages_map", None)
        if make is None:
            return False
        make()
    except Exception as exc:  # noqa: BLE001  # the task makes it again, as without the preload
        log.warning("cnnselect worker: could not make MLflow's package map (%s); each task makes its own", exc)
        return False
    return True


_SECONDS = preload()
log.info("cnnselect worker: preloaded %d modules in %.1f s", len(_SECONDS), sum(_SECONDS.values()))

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
