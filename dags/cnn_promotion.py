"""Promote each team's champion after every evaluation sweep.

### cnn_promotion

Scheduled by the `cnnselect://evaluations` asset, which `cnn_evaluation` emits on success. For each team file
(`cnnselect/teams/*.yaml`, or `CNNSELECT_TEAMS_DIR`), pick the winner under the team's constraints and move the team's
alias (`team-<name>`) on the dataset's registered model (`cnnselect-<dataset>`).

**Flow:** `list_teams` (validates every team file) -> `promote` (one mapped task per team) -> `report`.

- **Idempotent:** a rerun with nothing new moves nothing and records nothing.
- **Serialized per team:** a PostgreSQL advisory lock on a PostgreSQL store, a file lock otherwise.
- **Anti-flapping:** the champion changes only when the challenger wins beyond noise (the team's declared margin or
  non-overlapping confidence intervals), or the champion became infeasible, stale (another fingerprint or evaluator
  version) or unusable (deleted, artifact missing).
- **History:** every move is a run in the `cnnselect/promotions` experiment with `evidence.json`, and tags
  `cnnselect.promotion.<team>.*` on the versions.
- **Cold start:** when nothing qualifies, the team's task reports the selection guide's shortlist to measure first.

**Params:** `teams` (names; empty = every team file), `teams_dir` (empty = the default folder).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

EVALUATIONS = Asset("cnnselect://evaluations")
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # as in cnn_evaluation.py: MLflow's records at their level


@dag(
    dag_id="cnn_promotion",
    schedule=[EVALUATIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["cnnselect", "promotion"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=10),
        "queue": "default",
    },
    params={
        "teams": Param([], type="array", description="team names; empty = every team file"),
        "teams_dir": Param("", type="string", description="folder of team YAML files; empty = the default"),
    },
)
def cnn_promotion() -> None:
    @task
    def list_teams() -> list[str]:
        """The teams to promote: every file that validates.

        A bad file is reported here and turns the run red in ``report``, after the good teams were promoted.
        """
        from registry.teams import scan_teams

        params = get_current_context()["params"]
        scan = scan_teams(params["teams_dir"] or None)
        if scan.errors:
            print(scan.error())
        return list(params["teams"]) or [t.name for t in scan.teams]

    @task(map_index_template="{{ team_label }}")
    def promote(team: str) -> dict:
        from cnnselect.jobs import task_output
        from registry.client import Registry
        from registry.promotion import promote as promote_team

        context = get_current_context()
        context["team_label"] = team  # type: ignore[typeddict-unknown-key]
        registry = Registry(teams_dir=context["params"]["teams_dir"] or None)
        with task_output():
            return promote_team(team, registry, sweep=context["run_id"]).as_dict()

    @task
    def report(decisions: list[dict]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from registry.promotion import Decision
        from registry.teams import scan_teams

        blocks = {d["team"]: Decision(**{**d, "shortlist": tuple(d["shortlist"]), "reasons": tuple(d["reasons"])})
                  for d in decisions}  # fmt: skip
        print("\n\n".join("\n".join(b.describe()) for b in blocks.values()))  # one readable block per team
        bad = scan_teams(get_current_context()["params"]["teams_dir"] or None).error()
        if bad is not None:  # the good teams are promoted above; the run is red until every file validates
            raise AirflowFailException(str(bad))
        return {team: b.describe()[1].strip() for team, b in blocks.items()}

    report(promote.expand(team=list_teams()))


dag = cnn_promotion()

if __name__ == "__main__":
    dag.test()
