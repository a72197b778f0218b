"""Evaluate the catalog's CNNs on held-out data, log to MLflow, register the artifacts.

### cnn_evaluation

**Flow:** `prepare_data` (write or scan the ImageFolder, hash every image) -> `plan` (the guide's shortlist for
teams nothing satisfies yet, then the profile's variants, plus with `discover` the catalog variants and new timm
pretrained tags not yet measured) -> `pull` (one mapped task per variant:
fine-tune once, cache the weights) -> `measure_<runner>` (one mapped task per variant on each runner, on the runner's
Celery queue and host pool: export ONNX, accuracy, latency, size, log to MLflow, register the artifact) ->
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

EVALUATIONS = Asset("cnnselect://evaluations")
# Cron cadence; "none" = manual runs only. An environment constant read at parse time (no DB, no Variable).
SCHEDULE = os.environ.get("CNNSELECT_EVALUATION_SCHEDULE", "0 3 * * *")
PROFILES = ["demo", "smoke", "full"]
# runner -> (Celery queue, host pool). One slot per host pool: nothing else heavy runs on a host while it measures.
RUNNERS = {
    "cpu": ("default", "cnnselect-cpu-host"),
    "edge": ("edge", "cnnselect-cpu-host"),  # the 1-thread INT8 stand-in shares the CPU host (a real edge host: own)
    "torch-cpu": ("default", "cnnselect-cpu-host"),
    "gpu": ("gpu", "cnnselect-gpu-host"),
    "gpu-bf16": ("gpu", "cnnselect-gpu-host"),
    "gpu-ort": ("gpu", "cnnselect-gpu-host"),
    "gpu-trt": ("gpu", "cnnselect-gpu-host"),
    "openvino-fp32": ("default", "cnnselect-cpu-host"),
    "openvino-bf16": ("default", "cnnselect-cpu-host"),
    "openvino-int8": ("default", "cnnselect-cpu-host"),
    "executorch-xnnpack-fp32": ("edge", "cnnselect-cpu-host"),  # mobile kernels, measured on the CPU host
    "executorch-xnnpack-int8": ("edge", "cnnselect-cpu-host"),
    "litert-fp32": ("edge", "cnnselect-cpu-host"),
    "litert-int8": ("edge", "cnnselect-cpu-host"),
}
POOLS = sorted({pool for _, pool in RUNNERS.values()})
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
            return jobs.prepare_data(params["dataset_dir"] or None)
        except GateError as exc:  # the data will not fix itself: fail at once, the report is in MLflow
            raise AirflowFailException(str(exc)) from exc

    @task(execution_timeout=timedelta(minutes=10))
    def plan(dataset: dict) -> list[str]:
        from cnnselect import jobs

        context = get_current_context()
        dag_run = context["dag_run"]
        p, run_type = context["params"], str(getattr(dag_run.run_type, "value", dag_run.run_type))
        slot, started = getattr(dag_run, "run_after", None) or dag_run.logical_date, dag_run.start_date
        if jobs.missed_slot(run_type, slot, started, p["late_start_grace_minutes"]):
            print(f"cron slot {slot} started at {started}: too late (late_start_grace_minutes), nothing planned")
            return []
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
        from cnnselect import jobs

        context = get_current_context()
        context["variant_label"] = variant  # type: ignore[typeddict-unknown-key]
        p = context["params"]
        try:
            jobs.pull(variant, p["profile"], dataset["root"], p["weights"])
        except Exception as exc:  # recorded by the measuring tasks, which fail fast with the reason
            print(f"pull of {variant} failed; each runner will record why: {exc}")
        return variant

    def requested(runner: str):  # decided on the default queue: an unrequested runner's queue may have no worker
        @task.short_circuit(
            task_id=f"requested_{runner.replace('-', '_')}",
            ignore_downstream_trigger_rules=False,  # skip only this runner's measurements, not summarize
            execution_timeout=timedelta(minutes=2),
        )
        def is_requested() -> bool:
            return runner in get_current_context()["params"]["runners"]

        return is_requested()

    def measure_task(runner: str):  # one mapped task per runner: its own queue and host pool
        queue, pool = RUNNERS[runner]

        @task(
            task_id=f"measure_{runner.replace('-', '_')}",
            queue=queue,
            pool=pool,
            map_index_template="{{ variant_label }}",
        )
        def measure(variant: str, dataset: dict) -> dict:
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from cnnselect import jobs

            context = get_current_context()
            context["variant_label"] = f"{variant} on {runner}"  # type: ignore[typeddict-unknown-key]
            p = context["params"]
            if runner not in p["runners"]:
                raise AirflowSkipException(f"runner {runner!r} not requested (runners={p['runners']})")
            (out,) = jobs.evaluate(variant, p["profile"], dataset["root"], [runner], context["run_id"], p["weights"])
            print(jobs.outcome_summary(out))  # the log ends with what was measured and where it was logged
            if out["status"] == "failed":
                if out.get("stage") in TRANSIENT_STAGES:
                    raise RuntimeError(out["error"])  # retried with back-off
                raise AirflowFailException(out["error"])  # permanent: fail fast, recorded in MLflow already
            if out["status"] == "skipped":  # measured before with the same key: the grid shows it as skipped
                raise AirflowSkipException(f"{variant} on {runner}: already measured (MLflow run {out['run_id']})")
            return {k: out.get(k) for k in ("variant", "runner", "status", "run_id", "model_uri")}

        return measure

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[EVALUATIONS], execution_timeout=timedelta(minutes=5))
    def summarize(dataset: dict, planned: list) -> dict:
        from cnnselect import jobs

        context = get_current_context()
        summary = jobs.summarize(dataset["name"], context["run_id"])
        summary["planned"] = len(planned)
        asked = len(planned) * len([r for r in context["params"]["runners"] if r in RUNNERS])
        summary["skipped"] = max(0, asked - summary["ok"] - len(summary["failed"]))  # already measured
        if planned and summary["ok"] == 0 and not summary["skipped"]:
            raise RuntimeError(f"nothing could be evaluated in this sweep: {summary['failed']}")
        return summary

    @task(execution_timeout=timedelta(minutes=2))  # AirflowFailException: never retried
    def verdict(summary: dict) -> None:
        """The run's colour: red when any measurement failed (the others were still measured and promoted)."""
        from airflow.sdk.exceptions import AirflowFailException

        if summary["failed"]:
            lines = "\n".join(f"  {f['error']}" for f in summary["failed"])
            raise AirflowFailException(f"{len(summary['failed'])} measurement(s) failed:\n{lines}")
        print(f"{summary['ok']} measured, {summary['skipped']} already measured, of {summary['planned']} models")

    data = prepare_data()
    planned = plan(data)
    pulled = pull.partial(dataset=data).expand(variant=planned)
    measured = []
    for r in RUNNERS:
        m = measure_task(r).partial(dataset=data).expand(variant=pulled)
        requested(r) >> m
        measured.append(m)
    summary = summarize(data, planned)
    for m in measured:
        m >> summary
    verdict(summary)


dag = cnn_evaluation()

if __name__ == "__main__":
    dag.test()
