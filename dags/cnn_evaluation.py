"""Evaluate the catalog's CNNs on held-out data, log to MLflow, register the artifacts.

### cnn_evaluation

**Flow:** `prepare_data` (write or scan the ImageFolder, hash every image) -> `plan` (the guide's shortlist for
teams nothing satisfies yet, then the profile's variants, plus with `discover` the catalog variants and new timm
pretrained tags not yet measured) -> `pull` (one mapped task per variant:
fine-tune once, cache the weights) -> `measure_<queue>` (one mapped task per variant on each deployed queue, on that
Celery queue and its host pool: the model prepared once, export ONNX and FP32 reference, kept in the shared cache
for the other queues' tasks; then each of the queue's runners converts, measures accuracy, latency and size, logs to
MLflow and registers the artifact) ->
`summarize` (reads the sweep back from MLflow; emits the `cnnselect://evaluations` asset that schedules
`cnn_promotion`).

**Incremental:** a (variant, weights, dataset digest, runner, evaluator version) already measured is skipped; a
retry never duplicates a run or a registered version. **Failures:** a broken variant is recorded as a FAILED MLflow
run with the stage and reason and fails its task at once (no retry); transient faults (MLflow unreachable) retry
with back-off; the other variants carry on.

**Params:** `profile` (demo, smoke, full), `models` (overrides the profile), `dataset_dir` (ImageFolder root with
train/calibration/heldout; empty = bundled digits), `runners`, `weights` (finetune, transfer, timm-hub, scratch,
file:<uri>), `discover` (`scheduled`: on cron runs, also plan up to `discover_limit` catalog variants of the same
families and new timm pretrained tags not yet measured; `always`; `never`), `cold_start` (`scheduled`, `always`,
`never`; with the profile's list: first measure the selection guide's shortlist for every team that nothing measured
satisfies yet). A manual run with the defaults measures exactly what it asks for; `plan`'s log says what cold start or
discovery added.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task

from registry.settings import Settings  # pydantic-settings only: light enough for parse time

# MLflow's own stderr handler would show each of its INFO records as a red ERROR line in the task logs: let its
# records reach Airflow's handlers at their own level (set before any task imports MLflow)
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

EVALUATIONS = Asset("cnnselect://evaluations")
SETTINGS = Settings()  # the environment, read once when the file is parsed (no DB, no Variable)
SCHEDULE = SETTINGS.evaluation_schedule  # cron cadence; "none" = manual runs only
PROFILES = ["demo", "smoke", "full"]
# Where measurements run. RUNNERS: runner -> the Celery queue of the host kind it measures on; QUEUES: queue -> the
# host pool it occupies (one slot per pool: nothing else heavy runs on a host while it measures).
QUEUES = {
    "default": "cnnselect-cpu-host",  # the server CPU host
    "edge": "cnnselect-cpu-host",  # edge and mobile runtimes; a real edge device runs its own worker on this queue
    "gpu": "cnnselect-gpu-host",
}
RUNNERS = {
    "cpu": "default",
    "torch-cpu": "default",
    "openvino-fp32": "default",
    "openvino-bf16": "default",
    "openvino-int8": "default",
    "edge": "edge",  # the 1-thread INT8 stand-in
    "executorch-xnnpack-fp32": "edge",  # mobile kernels, measured on the CPU host
    "executorch-xnnpack-int8": "edge",
    "litert-fp32": "edge",
    "litert-int8": "edge",
    "gpu": "gpu",
    "gpu-bf16": "gpu",
    "gpu-ort": "gpu",
    "gpu-trt": "gpu",
}
# The queues this deployment runs workers for, read at parse time (an environment constant, like the schedule). One
# measure task per deployed queue; a runner whose queue is not deployed is measured on `default` (one host: the
# embedded default, where a GPU runner reports itself unavailable at once).
DEPLOYED = SETTINGS.deployed_queues
if "default" not in DEPLOYED or not set(DEPLOYED) <= set(QUEUES):
    raise ValueError(f"CNNSELECT_QUEUES={','.join(DEPLOYED)}: name 'default' and any of {', '.join(QUEUES)}")


def queue_of(runner: str) -> str:
    return RUNNERS[runner] if RUNNERS[runner] in DEPLOYED else "default"


POOLS = sorted(set(QUEUES.values()))
TRANSIENT_STAGES = {"log"}  # MLflow unreachable while logging: retry; everything else is the model's own fault


@dag(
    dag_id="cnn_evaluation",
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["cnnselect", "evaluation"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
        "queue": "default",
    },
    params={
        "profile": Param("demo", enum=PROFILES, description="named set of catalog variants"),
        "models": Param([], type="array", description="catalog names; overrides the profile's list when non-empty"),
        "dataset_dir": Param(  # optional: the trigger form's defaults must be a valid run (the bundled digits)
            None, type=["null", "string"], description="ImageFolder root; empty = the bundled digits"
        ),
        "runners": Param(["cpu", "edge"], type="array", description=f"of {sorted(RUNNERS)}"),
        "weights": Param(
            "finetune", type="string", description="finetune | transfer | timm-hub | scratch | file:<uri>"
        ),
        "discover": Param(
            "scheduled",
            enum=["scheduled", "always", "never"],
            description="plan unmeasured catalog variants and new timm tags: on cron runs only, always, or never",
        ),
        "discover_limit": Param(4, type="integer", minimum=0, description="at most this many discovered per run"),
        "late_start_grace_minutes": Param(
            60,
            type="integer",
            minimum=0,
            description="a cron run that starts later than this after its slot (a missed night, a DAG just unpaused) "
            "plans nothing: the next slot measures",
        ),
        "cold_start": Param(
            "scheduled",
            enum=["scheduled", "always", "never"],
            description="first measure the guide's shortlist for teams nothing satisfies yet: on cron runs only, "
            "always, or never (a manual run measures what it asks for)",
        ),
    },
)
def cnn_evaluation() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def prepare_data() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from cnnselect import jobs
        from evaluators.gates import GateError

        params = get_current_context()["params"]
        try:
            with jobs.task_output():
                return jobs.prepare_data(params["dataset_dir"] or None)
        except GateError as exc:  # the data will not fix itself: fail at once, the report is in MLflow
            raise AirflowFailException(str(exc)) from exc

    @task(execution_timeout=timedelta(minutes=10))
    def plan(dataset: dict) -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from cnnselect import jobs

        context = get_current_context()
        dag_run = context["dag_run"]
        p, run_type = context["params"], str(getattr(dag_run.run_type, "value", dag_run.run_type))
        try:  # a request naming no real model, runner or weights source is refused now, before any work
            jobs.check_request(p["models"], p["runners"], p["weights"], list(RUNNERS))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        slot, started = getattr(dag_run, "run_after", None) or dag_run.logical_date, dag_run.start_date
        if jobs.missed_slot(run_type, slot, started, p["late_start_grace_minutes"]):
            print(f"cron slot {slot} started at {started}: too late (late_start_grace_minutes), nothing planned")
            return []
        with jobs.task_output():
            return jobs.plan(
                p["profile"],
                p["models"] or None,
                dataset=dataset,
                discover_new=jobs.discovery_on(p["discover"], run_type),
                discover_limit=p["discover_limit"],
                cold_start=jobs.discovery_on(p["cold_start"], run_type),
            )

    @task(map_index_template="{{ variant_label }}", pool="cnnselect-cpu-host", execution_timeout=timedelta(hours=4))
    def pull(variant: str, dataset: dict) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from cnnselect import jobs

        context = get_current_context()
        context["variant_label"] = variant  # type: ignore[typeddict-unknown-key]
        p = context["params"]
        try:
            jobs.pull(variant, p["profile"], dataset["root"], p["weights"])
        except Exception as exc:  # the model's own fault: red here, and each of its runners records it in MLflow
            raise AirflowFailException(f"pull of {variant} failed: {exc}") from exc
        return variant

    def measure_task(queue: str):  # one mapped task per deployed queue, an item per model: its runners on this queue
        @task(
            task_id=f"measure_{queue}",
            queue=queue,
            pool=QUEUES[queue],
            map_index_template="{{ variant_label }}",
            trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,  # a failed pull fails its own model, not the others
        )
        def measure(variant: str, dataset: dict) -> list[dict]:
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from cnnselect import jobs

            context = get_current_context()
            p = context["params"]
            runners = [r for r in p["runners"] if queue_of(r) == queue]
            context["variant_label"] = f"{variant} on {', '.join(runners) or queue}"  # type: ignore[typeddict-unknown-key]
            if not runners:
                raise AirflowSkipException(f"no runner of queue {queue!r} requested (runners={p['runners']})")
            with jobs.task_output():
                outs = jobs.evaluate(variant, p["profile"], dataset["root"], runners, context["run_id"], p["weights"])
            print("\n\n".join(jobs.outcome_summary(o) for o in outs))  # the log ends with what was measured, where
            failed = [o for o in outs if o["status"] == "failed"]
            if any(o.get("stage") in TRANSIENT_STAGES for o in failed):
                raise RuntimeError("; ".join(o["error"] for o in failed))  # retried; what was logged is skipped then
            if failed:  # permanent: fail fast, recorded in MLflow already (the other runners' results stay)
                raise AirflowFailException("; ".join(f"{o['runner']}: {o['error']}" for o in failed))
            if all(o["status"] == "skipped" for o in outs):  # measured before with the same keys: shown as skipped
                raise AirflowSkipException(f"{variant} on {', '.join(runners)}: already measured")
            return [{k: o.get(k) for k in ("variant", "runner", "status", "run_id", "model_uri")} for o in outs]

        return measure

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[EVALUATIONS], execution_timeout=timedelta(minutes=5))
    def summarize(dataset: dict, planned: list | None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from cnnselect import jobs

        if planned is None:  # plan failed (a refused request): nothing ran, nothing to announce
            raise AirflowSkipException("nothing was planned")
        context = get_current_context()
        with jobs.task_output():
            summary = jobs.summarize(dataset["name"], context["run_id"])
        summary["planned"] = len(planned)
        asked = len(planned) * len(set(context["params"]["runners"]))
        summary["skipped"] = max(0, asked - summary["ok"] - len(summary["failed"]))  # already measured
        if asked and summary["ok"] == 0 and not summary["skipped"]:
            raise RuntimeError(f"nothing could be evaluated in this sweep: {summary['failed']}")
        return summary

    # the run's one leaf, so its state is the run's: ALL_DONE, to be red after a failed plan too
    @task(execution_timeout=timedelta(minutes=2), trigger_rule=TriggerRule.ALL_DONE)
    def verdict(summary: dict | None) -> None:
        """The run's colour: red when any measurement failed (the others were still measured and promoted)."""
        from airflow.sdk.exceptions import AirflowFailException  # never retried

        if summary is None:
            raise AirflowFailException("nothing was summarized: an earlier task failed (its log says why)")
        if summary["failed"]:
            lines = "\n".join(f"  {f['error']}" for f in summary["failed"])
            raise AirflowFailException(f"{len(summary['failed'])} measurement(s) failed:\n{lines}")
        print(f"{summary['ok']} measured, {summary['skipped']} already measured, of {summary['planned']} models")

    data = prepare_data()
    planned = plan(data)
    pulled = pull.partial(dataset=data).expand(variant=planned)
    summary = summarize(data, planned)
    for q in DEPLOYED:  # no row for a runner nobody asked for, nor for a queue this deployment has no worker for
        pulled >> measure_task(q).partial(dataset=data).expand(variant=planned) >> summary
    verdict(summary)


dag = cnn_evaluation()

if __name__ == "__main__":
    dag.test()
