"""What each REST call a read path could make costs at 10,000 versions: the choice behind ``registry.stores.api``.

A store seeded as ``bench_get_best`` seeds it (the first 200 versions through MLflow's API, the rest replicated in
SQL), served by ``mlflow server`` (one worker) over SQLite and over PostgreSQL (what ``docker-compose.yml`` runs);
each call timed 15 times after one warm-up, from a client on the same machine.

    .venv/bin/python -m bench.rest_calls              # 10,000 versions, both backends
    .venv/bin/python -m bench.rest_calls --quick      # 500 versions, SQLite only
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import _common as c
from bench._report import table
from bench.bench_get_best import DATASET, drop_store, fresh_store, seed, start_server, stop_server, timed
from registry import names

JOIN_REPS = 3  # a filter of four tags takes about 25 s a call on a PostgreSQL-backed server: three timings, not fifteen


def p50_and_best(fn: Callable[[], object], reps: int = 15) -> tuple[float, float]:
    """``fn`` timed ``reps`` times after one warm-up call (``bench_get_best.timed``): p50 and best, in ms."""
    fn()
    samples = timed(fn, reps)
    return statistics.median(samples) * 1e3, min(samples) * 1e3


def measure(backend: str, n: int) -> list[dict[str, object]]:
    from mlflow import MlflowClient

    from registry.constraints import Constraints
    from registry.selection import cost_term
    from registry.stores import logged

    k = Constraints(dataset=DATASET, max_latency_ms=20, min_top1=0.8, max_params_m=50)  # bench_get_best's
    home = Path(tempfile.mkdtemp(prefix=f"cnnselect-rest-{backend}-"))
    db = fresh_store(backend, home)
    try:
        seed(db, home, n, 8, min(n, 200))
        proc, uri = start_server(db, home)
        try:
            client, model = MlflowClient(uri), names.registered_model_name(DATASET)
            by_name = f"name = '{model}'"
            calls: dict[str, Callable[[], object]] = {
                "search_model_versions, newest update, 1 result (the check, waited for)": lambda: (
                    client.search_model_versions(by_name, max_results=1, order_by=["last_updated_timestamp DESC"])
                ),
                "search_registered_models by name (aliases, deletions: read for the next check)": lambda: (
                    client.search_registered_models(filter_string=by_name, max_results=1)
                ),
                "get_registered_model": lambda: client.get_registered_model(model),
                "get_latest_versions": lambda: client.get_latest_versions(model, stages=["None"]),
                "get_model_version (one version)": lambda: client.get_model_version(model, "1"),
            }
            direct = MlflowClient(db)  # MLflow's own store for the URI, no server between
            calls["logged.settle, the public-API cold answer, over HTTP"] = lambda: logged.settle(client, model, k)
            calls["logged.settle, the same, on the store directly (no server)"] = lambda: logged.settle(
                direct, model, k
            )
            # what each tag filtered on the server costs (why `logged.point_filter` sends only the runner's): the
            # first page of `settle`'s search, the operating point's tags as a seeded LoggedModel carries them
            experiment = client.get_experiment_by_name(names.experiment_name(DATASET))
            assert experiment is not None
            ids = [str(experiment.experiment_id)]
            tags = client.search_logged_models(ids, max_results=1)[0].tags
            point = logged.point_filter(k, tags[names.TAG_FINGERPRINT])  # the operating point's tags, runner first
            assert point is not None
            metric, sign = cost_term(k.objective, k)
            order = [{"field_name": f"metrics.{metric}", "ascending": sign > 0}]
            joins: dict[str, Callable[[], object]] = {}
            for n_tags in (1, 2, 4):
                where = " AND ".join(f"tags.`{key}` = '{tags[key]}'" for key in list(point[1])[:n_tags])
                joins[f"search_logged_models, {n_tags} point tag(s) filtered on the server, by {metric}, 8 results"] = (
                    lambda where=where: client.search_logged_models(
                        ids, filter_string=where, order_by=order, max_results=8
                    )
                )
            rows = []
            for name, fn in calls.items():
                p50, low = p50_and_best(fn)
                rows.append({"backend": backend, "versions": n, "call": name, "p50_ms": p50, "min_ms": low})
            for name, fn in joins.items():
                p50, low = p50_and_best(fn, JOIN_REPS)
                rows.append({"backend": backend, "versions": n, "call": f"{name} ({JOIN_REPS} timings)",
                             "p50_ms": p50, "min_ms": low})  # fmt: skip
            return rows
        finally:
            stop_server(proc)
    finally:
        drop_store(db)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    p = c.parser(__doc__)
    args = p.parse_args()
    n, backends = (500, ["sqlite"]) if args.quick else (10_000, ["sqlite", "postgresql"])
    rows = [row for b in backends for row in measure(b, n)]
    body = (
        "Each REST call a check could make, against `mlflow server` over each backend (p50 and best of 15). "
        "`search_registered_models` and `get_registered_model` compute the model's latest versions, a window over "
        "every version on the server: a check waits only for the newest version update and reads the registered "
        "model beside it for the next check (`registry.stores.api`). `logged.settle` is the cold answer from MLflow's "
        "public API (`search_logged_models` filtered and ordered on the server, the best versions judged from their "
        "cards) for `bench_get_best`'s constraints: on a SQL store it is why `registry.stores.pushdown` reads MLflow's "
        "tables instead (target 50 ms). The last rows time that search's first page with one, two and four of the "
        "operating point's tags filtered on the server: each tag is one more join under MLflow's ordering window, "
        "which is why `logged.point_filter` sends only the runner's and checks the rest on each LoggedModel.\n\n"
        + table(rows, ["backend", "versions", "call", "p50_ms", "min_ms"])
    )
    c.emit("rest-calls", "REST calls a check could make", body, args.no_write)


if __name__ == "__main__":
    main()
