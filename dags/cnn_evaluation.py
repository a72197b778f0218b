"""Evaluate the catalog's CNNs on held-out data, log to MLflow, register the artifacts.

### cnn_evaluation

Pull the catalog's CNN variants, evaluate each on the dataset's held-out split on every runner, log everything to
MLflow and register each evaluated artifact as a version of `cnnselect-<dataset>`.

**Flow:** `prepare_data` (write or scan the ImageFolder, hash every image) -> `plan` (the profile's variants) ->
`evaluate` (one mapped task per variant: pull -> export ONNX -> accuracy, latency, size per runner -> log) ->
`summarize` (reads the sweep back from MLflow; emits the `cnnselect://evaluations` asset).

A variant that fails is recorded as a FAILED MLflow run with the stage and the reason; the others carry on.
Re-running with nothing new skips every (variant, runner) already measured (idempotency key tag).

**Params:** `profile` (demo, smoke, full), `models` (overrides the profile), `dataset_dir` (an ImageFolder root with
train/calibration/heldout; empty = bundled digits), `runners`, `weights` (finetune, timm-hub, scratch, file:<uri>).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task

EVALUATIONS = Asset("cnnselect://evaluations")
PROFILES = ["demo", "smoke", "full"]
RUNNERS = ["cpu", "edge"]


@dag(
    dag_id="cnn_evaluation",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["cnnselect", "evaluation"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
        "queue": "default",
    },
    params={
        "profile": Param("demo", enum=PROFILES, description="named set of catalog variants"),
        "models": Param([], type="array", description="catalog names; overrides the profile's list when non-empty"),
        "dataset_dir": Param("", type="string", description="ImageFolder root; empty = the bundled digits"),
        "runners": Param(RUNNERS, type="array", description="runners to measure on"),
        "weights": Param("finetune", type="string", description="finetune | timm-hub | scratch | file:<uri>"),
    },
)
def cnn_evaluation() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def prepare_data() -> dict:
        from cnnselect import jobs

        params = get_current_context()["params"]
        return jobs.prepare_data(params["dataset_dir"] or None)

    @task(execution_timeout=timedelta(minutes=5))
    def plan() -> list[str]:
        from cnnselect import jobs

        params = get_current_context()["params"]
        return jobs.plan(params["profile"], params["models"] or None)

    @task(map_index_template="{{ variant_label }}")
    def evaluate(variant: str, dataset: dict) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from cnnselect import jobs

        context = get_current_context()
        context["variant_label"] = variant  # type: ignore[typeddict-unknown-key]
        params = context["params"]
        outcomes = jobs.evaluate(
            variant, params["profile"], dataset["root"], list(params["runners"]), context["run_id"], params["weights"]
        )
        if all(o["status"] == "failed" for o in outcomes):  # recorded in MLflow already; retrying will not help
            raise AirflowFailException("; ".join(o["error"] for o in outcomes))
        return [{k: o.get(k) for k in ("runner", "status", "run_id", "model_uri", "error")} for o in outcomes]

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[EVALUATIONS], execution_timeout=timedelta(minutes=5))
    def summarize(dataset: dict, results: list) -> dict:
        from cnnselect import jobs

        context = get_current_context()
        summary = jobs.summarize(dataset["name"], context["run_id"])
        summary["skipped"] = sum(o["status"] == "skipped" for per_model in results if per_model for o in per_model)
        if summary["ok"] == 0 and not summary["skipped"]:
            raise RuntimeError(f"nothing could be evaluated in this sweep: {summary['failed']}")
        return summary

    data = prepare_data()
    results = evaluate.partial(dataset=data).expand(variant=plan())
    summarize(data, results)


dag = cnn_evaluation()

if __name__ == "__main__":
    dag.test()
