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
    """Import :data:`PRELOAD` (and Great Expectations, as the results gate imports it); seconds per module.

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
    return seconds


_SECONDS = preload()
log.info("cnnselect worker: preloaded %d modules in %.1f s", len(_SECONDS), sum(_SECONDS.values()))

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
