"""get_best with many registered versions, warm and cold, beside the naive way: SQLite, PostgreSQL, a tracking server.

Setup (not timed): a fresh store per backend, one real evaluation logged and registered, then N evaluations cloned
from it (``clone``: each its own LoggedModel with the run's tags and its metrics, one version registered from it with
the tags the pipeline writes; varied metrics, two runners), in parallel threads on PostgreSQL. PostgreSQL then gets
``VACUUM ANALYZE``: autovacuum is off on the test server, and a production server's autovacuum would have run after
such a bulk load.

A Registry whose index is not loaded answers ``get_best`` in the store (``registry.stores.pushdown``); one whose
index is loaded (``candidates()``, ``explain()``, promotion) answers from it. Timed, each a separate definition of
"cold":
- warm: the same constraints again within the TTL (the production steady state);
- ttl_refresh: TTL expired, nothing changed: one watermark query, then memory;
- changed_store: TTL expired after one new version, index not loaded: computed in the store again;
- changed_index: the same with the index loaded: only the changed versions read (a delta), then memory;
- first: the very first ``get_best`` after seeding;
- cold: ``invalidate()`` then ``get_best``, engine and connection pool open: computed in the store from MLflow's
  tables (one card tag per version), nothing written;
- cold_process: a new ``Registry`` after every engine was disposed, in a process that has imported everything:
  engine creation, first connection, the answer computed in the store, artifact check;
- index_load: ``invalidate()`` then ``candidates()``: the full index load (every version and its tags);
- new_process: ``python -c`` with nothing imported: the imports it needs and its first ``get_best`` (whole wall time
  in ``new_process_wall``, interpreter start included);
- naive: ``search_model_versions`` paged over every version, figures read from their cards, then the same pure
  selection (what ``get_best`` did before the index), MLflow's store already built.

    .venv/bin/python -m bench.bench_get_best            # 10,000 versions, sqlite, postgresql and http
    .venv/bin/python -m bench.bench_get_best --through-api 200   # the same, 9,800 of them replicated in SQL
    .venv/bin/python -m bench.bench_get_best --quick    # 500 versions, to prove it works
    .venv/bin/python -m bench.bench_get_best --quick --stores http --quick-versions 300 --no-write

``http``: the same seed written to SQLite, then served by ``mlflow server`` (one worker) on a loopback port; every
read through MLflow's REST API (``registry.stores.api``). See ``bench_http``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import table, write_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DATASET = "bench"
HOST = "cpu-bench0000000"  # every version measured on one machine
FAMILIES = ["resnet", "efficientnet", "mobilenetv3", "efficientnet_lite", "densenet"]


def fresh_store(kind: str, home: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{home / 'mlflow.db'}"
    import sqlalchemy as sa

    name = f"cnnselect_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_store(uri: str) -> None:
    if not uri.startswith("postgresql"):
        return
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{uri.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def evaluation(base_tags: dict[str, str], i: int) -> tuple[dict[str, str], dict[str, float]]:
    """An evaluation's tags (its run's and LoggedModel's) and metrics, as the pipeline writes them, varied by ``i``."""
    from registry import names

    rng = random.Random(i)
    runner = "cpu" if i % 2 else "edge"
    top1, lat = rng.uniform(0.5, 0.99), rng.uniform(0.5, 80)
    metrics = {"top1": top1, "top1_ci_low": top1 - 0.02, "top1_ci_high": min(1.0, top1 + 0.02),
               "latency_p95_ms": lat, "latency_p95_ub_ms": lat * 1.08, "params_m": rng.uniform(1, 100),
               "size_mb": rng.uniform(1, 400), "gmacs": rng.uniform(0.05, 20), "memory_rss_mb": rng.uniform(5, 900),
               "top1_drop_vs_fp32": rng.uniform(0, 0.05), "onnx_parity_ok": 1.0}  # fmt: skip
    tags = {**base_tags, names.TAG_VARIANT: f"m{i}", names.TAG_FAMILY: FAMILIES[i % len(FAMILIES)],
            names.TAG_RUNNER: runner, names.TAG_PRECISION: "fp32" if runner == "cpu" else "int8",
            names.TAG_HOST: HOST}  # fmt: skip
    return tags, metrics


@dataclass(frozen=True)
class Seed:
    """What cloning one more evaluation needs: the seed's experiment, run, version tags and model files."""

    experiment_id: str
    run_id: str
    base_tags: dict[str, str]
    files: Path  # the seed LoggedModel's artifacts folder, linked into each clone's


def link_files(files: Path, folder: Path) -> None:
    """``files`` (a folder) at ``folder`` too, each file hard-linked: MLflow refuses a symlink out of its folder."""
    shutil.copytree(files, folder, copy_function=os.link)


def clone(client: Any, model_name: str, seed: Seed, i: int, by_server: bool = False) -> str:
    """One more evaluation as ``log_evaluation`` leaves it: its own run and LoggedModel (the run's tags, its metrics
    linked to both), finalized, one version registered from it with its card, and the model's
    ``mlflow.modelVersions`` tag (what ``mlflow.register_model`` writes; a tracking server, ``by_server``, writes it
    itself). The files are the seed's, linked: the artifact check finds them."""
    from mlflow.entities import Metric

    from registry import names

    tags, metrics = evaluation(seed.base_tags, i)
    run_id = client.create_run(seed.experiment_id, run_name=f"m{i}").info.run_id  # one run per evaluation
    tags[names.TAG_RUN_ID] = run_id
    lm_tags = {k: v for k, v in tags.items() if k not in (names.TAG_STATUS, names.TAG_RUN_ID, names.TAG_CARD)}
    lm = client.create_logged_model(seed.experiment_id, name="model", source_run_id=run_id, tags=lm_tags)
    folder = Path(lm.artifact_location.removeprefix("file://"))
    if not folder.exists() and seed.files.exists():  # a local artifact store (the bench's): the seed's files, linked
        link_files(seed.files, folder)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0, run_id=run_id, model_id=lm.model_id)
                                      for k, v in metrics.items()])  # fmt: skip
    client.finalize_logged_model(lm.model_id, "READY")
    mv = client.create_model_version(model_name, f"models:/{lm.model_id}", run_id=run_id,
                                     tags=names.version_tags(tags, metrics), model_id=lm.model_id)  # fmt: skip
    if not by_server:
        linked = json.dumps([{"name": model_name, "version": str(mv.version)}])
        client.set_logged_model_tags(lm.model_id, {"mlflow.modelVersions": linked})
    return str(mv.version)


def seed(uri: str, home: Path, n: int, workers: int, through_api: int = 0) -> tuple[float, Seed]:
    """The store filled with ``n`` versions, the first ``through_api`` through MLflow's API and the rest replicated
    in SQL (:func:`replicate`; 0: all through the API); returns the seconds it took and what cloning one more
    evaluation needs."""
    import numpy as np
    import torch
    from mlflow import MlflowClient

    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.export import export_onnx
    from registry import names
    from registry.settings import Settings
    from registry.tracking import DatasetRef, Evaluation
    from registry.writes import log_evaluation

    t0 = time.perf_counter()
    if uri.startswith("sqlite"):
        _unsynced_sqlite()
    settings = Settings(home=home, tracking_uri=uri)
    torch.manual_seed(0)
    model = create_model(get_entry("test_efficientnet.r160_in1k"), 10).eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    art = export_onnx(model, x, home / "onnx")
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    ref = DatasetRef(DATASET, "d" * 64, str(art.path.parent), tuple("0123456789"), "h" * 64, 450)
    base_metrics = {"top1": 0.5, "top1_ci_low": 0.45, "top1_ci_high": 0.55, "latency_p95_ms": 50.0,
                    "latency_p95_ub_ms": 55.0, "params_m": 30.0, "size_mb": 100.0, "onnx_parity_ok": 1.0}  # fmt: skip
    ev = Evaluation("seed", "resnet", "cpu", "fp32", ref, "seed", "bench", {"batch_size": "1", "threads": "all"},
                    "fp-bench", "w" * 64, "scratch", art.path, x, y, {}, base_metrics)  # fmt: skip
    client = MlflowClient(uri)
    # artifacts under the bench's temporary home on every store (a PostgreSQL store would default to ./mlruns)
    exp_id = client.create_experiment(names.experiment_name(DATASET), artifact_location=(home / "mlartifacts").as_uri())
    logged = log_evaluation(settings, ev)
    model_name = names.registered_model_name(DATASET)
    seed_mv = client.get_model_version(model_name, str(logged.version))
    files = Path(client.get_logged_model(seed_mv.source.rsplit("/", 1)[-1]).artifact_location.removeprefix("file://"))
    s = Seed(str(exp_id), seed_mv.run_id, dict(seed_mv.tags), files)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda i: clone(client, model_name, s, i), range(min(n, through_api or n) - 1)))
    if through_api and through_api < n:
        replicate(uri, home, n)
    if uri.startswith("postgresql"):
        import sqlalchemy as sa

        engine = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        engine.dispose()
    return time.perf_counter() - t0, s


def replicate(uri: str, home: Path, to: int) -> int:
    """The seeded store grown to ``to`` versions by copying, in SQL, the rows :func:`clone` writes through the API (a
    run, a LoggedModel with its tags, metrics and ``mlflow.modelVersions`` link, a version with its tags), with the
    next evaluations' figures: the same rows, an hour faster than the API at 10,000 versions on a busy 2-core machine.
    Each new row is the newest clone's with its keys and figures replaced (columns by name, read from the database:
    SQLite and PostgreSQL alike). Returns how many versions were added."""
    import sqlalchemy as sa

    from registry import names

    engine = sa.create_engine(uri)
    md = sa.MetaData()
    t = {n: sa.Table(n, md, autoload_with=engine) for n in ("runs", "logged_models", "logged_model_tags",
         "logged_model_metrics", "model_versions", "model_version_tags", "registered_models")}  # fmt: skip
    model = names.registered_model_name(DATASET)
    mv_t, lm_t = t["model_versions"], t["logged_models"]
    with engine.begin() as conn:
        top = conn.execute(sa.select(sa.func.max(mv_t.c.version)).where(mv_t.c.name == model)).scalar_one()
        mv = conn.execute(sa.select(mv_t).where(mv_t.c.name == model, mv_t.c.version == top)).one()._asdict()
        lm_id = mv["source"].removeprefix("models:/")
        lm = conn.execute(sa.select(lm_t).where(lm_t.c.model_id == lm_id)).one()._asdict()
        run = conn.execute(sa.select(t["runs"]).where(t["runs"].c.run_uuid == mv["run_id"])).one()._asdict()
        metric = conn.execute(sa.select(t["logged_model_metrics"]).where(
            t["logged_model_metrics"].c.model_id == lm_id)).first()._asdict()  # fmt: skip
        lm_tag = conn.execute(sa.select(t["logged_model_tags"]).where(
            t["logged_model_tags"].c.model_id == lm_id)).first()._asdict()  # fmt: skip
        mv_tag_t = t["model_version_tags"]
        mv_tag = conn.execute(sa.select(mv_tag_t).where(mv_tag_t.c.name == model, mv_tag_t.c.version == 1)).first()
        base = dict(conn.execute(sa.select(mv_tag_t.c.key, mv_tag_t.c.value).where(
            mv_tag_t.c.name == model, mv_tag_t.c.version == 1)).all())  # fmt: skip
        files = Path(lm["artifact_location"].removeprefix("file://")).resolve()
        created = int(mv["creation_time"])
        out: dict[str, list[dict[str, Any]]] = {n: [] for n in t if n != "registered_models"}
        for i in range(top - 1, to - 1):  # clone i is version i + 2
            version, new_run, new_lm = i + 2, uuid.uuid4().hex, f"m-{uuid.uuid4().hex}"
            tags, metrics = evaluation(base, i)
            tags[names.TAG_RUN_ID] = new_run
            at = created + version
            out["runs"].append({**run, "run_uuid": new_run, "name": f"m{i}"})
            folder = home / "mlartifacts" / "models" / new_lm / "artifacts"
            link_files(files, folder)
            out["logged_models"].append({**lm, "model_id": new_lm, "artifact_location": folder.as_uri(),
                                         "creation_timestamp_ms": at, "last_updated_timestamp_ms": at,
                                         "source_run_id": new_run})  # fmt: skip
            lm_tags = {k: v for k, v in tags.items() if k not in (names.TAG_STATUS, names.TAG_RUN_ID, names.TAG_CARD)}
            lm_tags["mlflow.modelVersions"] = json.dumps([{"name": model, "version": str(version)}])
            out["logged_model_tags"] += [{**lm_tag, "model_id": new_lm, "tag_key": k, "tag_value": v}
                                         for k, v in lm_tags.items()]  # fmt: skip
            out["logged_model_metrics"] += [{**metric, "model_id": new_lm, "metric_name": k, "metric_value": v,
                                             "metric_timestamp_ms": at, "run_id": new_run}
                                            for k, v in metrics.items()]  # fmt: skip
            out["model_versions"].append({**mv, "version": version, "creation_time": at, "last_updated_time": at,
                                          "source": f"models:/{new_lm}", "run_id": new_run,
                                          "storage_location": folder.as_uri()})  # fmt: skip
            out["model_version_tags"] += [{**mv_tag._asdict(), "key": k, "value": v, "version": version}
                                          for k, v in names.version_tags(tags, metrics).items()]  # fmt: skip
        for name, rows in out.items():
            for start in range(0, len(rows), 5000):
                conn.execute(t[name].insert(), rows[start : start + 5000])
        rm = t["registered_models"]
        conn.execute(rm.update().where(rm.c.name == model).values(last_updated_time=created + to + 1))
    engine.dispose()
    return max(0, to - top)


def _unsynced(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        dbapi_connection.execute("PRAGMA synchronous = OFF")


def _unsynced_sqlite() -> None:
    """Every SQLite connection this process opens from now on commits without waiting for the disk (seeding only: a
    crash would lose the store, which is thrown away anyway)."""
    import sqlalchemy as sa

    if not sa.event.contains(sa.engine.Engine, "connect", _unsynced):
        sa.event.listen(sa.engine.Engine, "connect", _unsynced)


def naive_get_best(uri: str, k) -> str:
    from mlflow import MlflowClient

    from registry import names
    from registry.selection import select
    from registry.stores.versions import candidate_from_tags, usable

    client = MlflowClient(uri)
    model_name = names.registered_model_name(DATASET)
    cands, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
        built = [candidate_from_tags(model_name, str(mv.version), mv.run_id, mv.creation_timestamp, mv.tags)
                 for mv in page if mv.status == "READY" and usable(mv.tags)]  # fmt: skip
        cands += [c for c in built if c is not None]
        token = page.token
        if not token:
            return select(cands, k)[0].candidate.version


def tag_rows(uri: str, model: str) -> int:
    """Every tag row of the registered model fetched, nothing built: what any full read of MLflow's tables moves."""
    import sqlalchemy as sa

    from registry.stores import mlflow_tables

    with mlflow_tables.shared_engine(uri).connect() as conn:
        sql = "SELECT version, key, value FROM model_version_tags WHERE workspace = 'default' AND name = :name"
        return len(conn.execute(sa.text(sql), {"name": model}).all())


NEW_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from registry.client import Registry
from registry.constraints import Constraints
from registry.settings import Settings
t1 = time.perf_counter()
registry = Registry(settings=Settings(home={home!r}, tracking_uri={uri!r}))
answer = registry.get_best(Constraints.model_validate_json({k!r}))
t2 = time.perf_counter()
print(json.dumps({{"imports": t1 - t0, "first": t2 - t1, "version": answer.candidate.version,
                  "mlflow_imported": "mlflow" in sys.modules}}))
"""


def new_process(uri: str, home: Path, k) -> dict[str, object]:
    code = NEW_PROCESS.format(repo=str(REPO), home=str(home), uri=uri, k=k.model_dump_json())
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    wall = time.perf_counter() - t
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def timed(fn, reps: int, before=None) -> list[float]:
    out = []
    for _ in range(reps):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def bench(kind: str, n: int, workers: int, reps: int, through_api: int = 0) -> dict[str, object]:
    import mlflow
    from mlflow import MlflowClient

    from registry import hosts, names
    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.settings import Settings
    from registry.stores import mlflow_tables

    home = Path(tempfile.mkdtemp(prefix=f"cnnselect-bench-{kind}-"))
    uri = fresh_store(kind, home)
    try:
        seed_s, cloned = seed(uri, home, n, 1 if kind == "sqlite" else workers, through_api)
        settings = Settings(home=home, tracking_uri=uri)
        k = Constraints(dataset=DATASET, max_latency_ms=20, min_top1=0.8, max_params_m=50)
        model = names.registered_model_name(DATASET)
        reg = Registry(settings=settings, ttl_s=3600)
        t = time.perf_counter()
        want = reg.get_best(k).candidate.version
        first = time.perf_counter() - t
        assert reg.index.loads == 0, "the first get_best loaded the index instead of answering in the store"
        assert naive_get_best(uri, k) == want, "naive and in-store answers differ"
        indexed = Registry(settings=settings, ttl_s=3600)
        indexed.candidates(DATASET)
        assert indexed.get_best(k).candidate.version == want, "index and in-store answers differ"
        samples = {"warm": timed(lambda: reg.get_best(k), reps * 100)}
        samples["cold"] = timed(lambda: reg.get_best(k), reps, before=lambda: reg.invalidate(DATASET))
        hk = k.model_copy(update={"target": "cpu-host"})
        on_host = hosts.select(indexed.candidates(DATASET), hk)[0].candidate.version
        assert reg.get_best(hk).candidate.version == indexed.get_best(hk).candidate.version == on_host, "host answers"
        samples["host_warm"] = timed(lambda: reg.get_best(hk), reps * 100)
        samples["host_cold"] = timed(lambda: reg.get_best(hk), reps, before=lambda: reg.invalidate(DATASET))
        assert reg.index.loads == 0, "a host target's cold answer loaded the index"
        assert set(reg.index.store_queries) == {"sql"}, reg.index.store_queries
        samples["index_load"] = timed(lambda: reg.candidates(DATASET), reps, before=lambda: reg.invalidate(DATASET))

        def fresh_registry() -> None:
            mlflow_tables.dispose_engines()
            holder["reg"] = Registry(settings=settings)

        holder: dict[str, Registry] = {}
        samples["cold_process"] = timed(lambda: holder["reg"].get_best(k), reps, before=fresh_registry)
        assert holder["reg"].index.loads == 0, "cold_process loaded the index"
        expiring = Registry(settings=settings, ttl_s=0, stale_s=0)  # each call waits for what its refresh reads
        expiring.get_best(k)
        samples["ttl_refresh"] = timed(lambda: expiring.get_best(k), reps * 3)
        expiring_indexed = Registry(settings=settings, ttl_s=0, stale_s=0)
        expiring_indexed.candidates(DATASET)
        expiring_indexed.get_best(k)
        mlflow.set_tracking_uri(uri)  # MLflow resolves a `models:/m-...` source through the global tracking URI
        client = MlflowClient(uri)
        extra = iter(range(n, n + 4 * reps))

        def add_version() -> None:
            clone(client, model, cloned, next(extra))

        samples["changed_store"] = timed(lambda: expiring.get_best(k), reps, before=add_version)
        samples["changed_index"] = timed(lambda: expiring_indexed.get_best(k), reps, before=add_version)
        expiring.get_best(hk), expiring_indexed.get_best(hk)
        samples["host_changed_store"] = timed(lambda: expiring.get_best(hk), reps, before=add_version)
        samples["host_changed_index"] = timed(lambda: expiring_indexed.get_best(hk), reps, before=add_version)
        assert expiring.index.loads == 0, "a change made the in-store path load the index"
        assert expiring_indexed.index.loads == 1 and expiring_indexed.index.deltas >= 2 * reps, "a change was no delta"
        procs = [new_process(uri, home, k) for _ in range(3)]
        naive = timed(lambda: naive_get_best(uri, k), 3)
        samples["tag_rows"] = timed(lambda: tag_rows(uri, model), reps)
        mlflow_tables.dispose_engines()
    finally:
        drop_store(uri)
        shutil.rmtree(home, ignore_errors=True)
    row: dict[str, object] = {"store": kind, "versions": n, "seed_s": round(seed_s, 1)}
    row["first_ms"] = first * 1e3
    for name, s in {**samples, "naive": naive}.items():
        row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = ms(s)
    for key in ("imports", "first", "wall"):
        row[f"new_process_{key}_ms"] = statistics.median(float(p[key]) for p in procs) * 1e3  # type: ignore[arg-type]
    row["new_process_imports_mlflow"] = any(p["mlflow_imported"] for p in procs)
    return row


def start_server(db_uri: str, home: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` (one worker, served artifacts) on a free loopback port over ``db_uri``; it and its URL."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", db_uri,
            "--artifacts-destination", str(home / "served"), "--serve-artifacts", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]  # fmt: skip
    # no job execution: its worker processes (GenAI scoring, trace archival) start some 15 s after the server and
    # take a core of a small VM while the reads are timed
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    stop_server(proc)
    raise RuntimeError(f"mlflow server did not start: {(home / 'server.log').read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def bench_http(n: int, reps: int, through_api: int = 0) -> dict[str, object]:
    """The same seed in SQLite, served by `mlflow server`; every read through MLflow's REST API (registry.stores.api).

    - cold: ``invalidate()`` then ``get_best``: the best LoggedModels first (``registry.stores.logged``: filtered and
      ordered by the server, their versions' cards judged); where it is not sure the index loads (``cold_path`` counts
      the answers of each);
    - index_load: the full index load, one request; ttl_refresh: the index loaded, TTL expired, nothing changed (two
      REST calls, one waited for); changed_index: one more version, then ``get_best`` (the versions updated since,
      one short page);
    - stale_read: a ``get_best`` past the TTL after a change (``stale_s``): it starts the refresh in the background
      and returns the last answer at once;
    - naive: ``search_model_versions`` paged by 1000 over every version (what the index did before).
    """
    from mlflow import MlflowClient

    from registry import names
    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="cnnselect-bench-http-"))
    db = f"sqlite:///{home / 'mlflow.db'}"
    proc = None
    try:
        seed_s, cloned = seed(db, home, n, 1, through_api)  # in the database directly: the server serves it
        proc, uri = start_server(db, home)
        settings = Settings(home=home, tracking_uri=uri)
        k = Constraints(dataset=DATASET, max_latency_ms=20, min_top1=0.8, max_params_m=50)
        model = names.registered_model_name(DATASET)
        reg = Registry(settings=settings, ttl_s=3600)
        t = time.perf_counter()
        want = reg.get_best(k).candidate.version
        first = time.perf_counter() - t
        assert reg.index.store_queries == {"api": 1}, reg.index.store_queries
        assert naive_get_best(uri, k) == want, "naive and REST answers differ"
        indexed = Registry(settings=settings, ttl_s=3600)
        indexed.candidates(DATASET)
        assert indexed.get_best(k).candidate.version == want, "index and REST answers differ"
        samples = {"warm": timed(lambda: indexed.get_best(k), reps * 100)}
        cold = Registry(settings=settings, ttl_s=3600)  # no prefetch behind it: each cold answer from the point
        cold.index.prefetch = lambda model_name: None  # type: ignore[method-assign]
        samples["cold"] = timed(lambda: cold.get_best(k), reps, before=lambda: cold.invalidate(DATASET))
        answered = {"store": reps - cold.index.loads, "index": cold.index.loads}  # who gave each cold answer
        samples["index_load"] = timed(
            lambda: indexed.candidates(DATASET), max(2, reps // 3), before=lambda: indexed.invalidate(DATASET)
        )
        expiring = Registry(settings=settings, ttl_s=0, stale_s=0)  # each call checks, and waits for what it reads
        expiring.candidates(DATASET)
        expiring.get_best(k)
        samples["ttl_refresh"] = timed(lambda: expiring.get_best(k), reps * 3)
        client = MlflowClient(uri)
        extra = iter(range(n, n + 4 * reps))

        def add_version() -> None:
            clone(client, model, cloned, next(extra), by_server=True)

        samples["changed_index"] = timed(lambda: expiring.get_best(k), reps, before=add_version)
        assert expiring.index.loads == 1 and expiring.index.deltas >= reps, "a change was no delta"
        stale = Registry(settings=settings, ttl_s=0.2, stale_s=60)
        stale.candidates(DATASET)

        def expire_after_a_change() -> None:  # the last refresh done and its answer cached, then a change, TTL past
            while stale.index.refreshing(model):
                time.sleep(0.001)
            stale.index._refresh(model)  # in this thread: the next call is within the TTL and caches its answer
            stale.get_best(k)
            add_version()
            time.sleep(0.25)

        samples["stale_read"] = timed(lambda: stale.get_best(k), reps, before=expire_after_a_change)
        assert stale.index.background_refreshes >= reps, "a read past the TTL started no background refresh"
        naive = timed(lambda: naive_get_best(uri, k), 1)
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)
    row: dict[str, object] = {"store": "http", "versions": n, "seed_s": round(seed_s, 1), "first_ms": first * 1e3}
    row["cold_path"] = " ".join(f"{path}:{count}" for path, count in sorted(answered.items()))
    for name, s in {**samples, "naive": naive}.items():
        row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = ms(s)
    return row


def verdict_http(row: dict[str, object]) -> str:
    def mark(name: str, limit: float) -> str:
        v = float(row[f"{name}_p50_ms"])  # type: ignore[arg-type]
        return f"{name} {v:.3g} ms {'meets' if v <= limit else 'MISSES'} {limit:g} ms"

    return (
        f"http: {mark('warm', 1)}; {mark('ttl_refresh', 50)}; {mark('cold', 1000)}; changed_index "
        f"{float(row['changed_index_p50_ms']):.3g} ms; stale_read {float(row['stale_read_p50_ms']):.3g} ms "  # type: ignore[arg-type]
        f"(naive {float(row['naive_p50_ms']):.3g} ms); cold answered by {row['cold_path']}"  # type: ignore[arg-type]
    )


def verdict(row: dict[str, object]) -> str:
    def mark(name: str, limit: float) -> str:
        v = float(row[f"{name}_p50_ms"])  # type: ignore[arg-type]
        return f"{name} {v:.3g} ms {'meets' if v <= limit else 'MISSES'} {limit:g} ms"

    cold = ", ".join(mark(c, 50) for c in ("ttl_refresh", "changed_store", "changed_index", "cold", "cold_process"))
    floor = float(row["tag_rows_p50_ms"])  # type: ignore[arg-type]
    host = ", ".join(
        f"{h} {float(row[f'host_{h}_p50_ms']) / float(row[f'{h}_p50_ms']):.1f}x"  # type: ignore[arg-type]
        for h in ("warm", "cold", "changed_store", "changed_index")
    )
    return (
        f"{row['store']}: {mark('warm', 1)}; {cold} (for scale, fetching its tag rows alone: {floor:.3g} ms); "
        f"the host target against the runner target: {host}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="500 versions, fewer repetitions")
    p.add_argument("--versions", type=int, default=10_000)
    p.add_argument("--stores", default="sqlite,postgresql,http")
    p.add_argument("--quick-versions", type=int, default=500, help="versions with --quick")
    p.add_argument("--workers", type=int, default=8, help="seeding threads on PostgreSQL")
    p.add_argument("--through-api", type=int, default=0, help="seed this many versions through MLflow's API, the rest "
                   "replicated in SQL (0: all through the API)")  # fmt: skip
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = p.parse_args(argv)
    from registry import names

    n, reps = (args.quick_versions, 5) if args.quick else (args.versions, 15)
    through_api = args.through_api
    load_before = os.getloadavg()[0]
    kinds = args.stores.split(",")
    rows = [bench(kind, n, args.workers, reps, args.through_api) for kind in kinds if kind != "http"]
    http_rows = [bench_http(n, reps, args.through_api)] if "http" in kinds else []
    load_after = os.getloadavg()[0]
    cols = ["store", "versions", "warm_p50_ms", "warm_p99_ms", "ttl_refresh_p50_ms", "changed_store_p50_ms",
            "changed_index_p50_ms", "cold_p50_ms", "cold_process_p50_ms",
            "index_load_p50_ms", "tag_rows_p50_ms", "new_process_imports_ms", "new_process_first_ms",
            "new_process_wall_ms", "naive_p50_ms", "first_ms", "seed_s"]  # fmt: skip
    http_cols = ["store", "versions", "warm_p50_ms", "warm_p99_ms", "ttl_refresh_p50_ms", "changed_index_p50_ms",
                 "stale_read_p50_ms", "cold_p50_ms", "cold_path", "index_load_p50_ms", "naive_p50_ms",
                 "first_ms"]  # fmt: skip
    host_cols = ["store", "versions", "warm_p50_ms", "host_warm_p50_ms", "cold_p50_ms", "host_cold_p50_ms",
                 "changed_store_p50_ms", "host_changed_store_p50_ms", "changed_index_p50_ms",
                 "host_changed_index_p50_ms"]  # fmt: skip
    body = "\n\n".join(
        [
            table(rows, cols),
            "The host target `cpu-host` (its ten CPU runtimes, two of them measured here) beside the runner target "
            "`cpu`, the same budgets:\n\n" + table(rows, host_cols),
            "Targets (PostgreSQL, 10,000 versions): warm p50 <= 1 ms, cold <= 50 ms. Against them:\n\n"
            + "\n".join(f"- {verdict(r)}" for r in rows),
            *(
                [
                    "Over HTTP (`mlflow server`, one worker, SQLite behind it, the same seed; every read through "
                    "MLflow's REST API, `registry.stores.api`) beside the SQL stores:\n\n"
                    + table([*rows, *http_rows], http_cols)
                    + "\n\nTargets over HTTP: cold <= 1 s, ttl_refresh <= 50 ms, warm p50 <= 1 ms. Against them:\n\n"
                    + "\n".join(f"- {verdict_http(r)}" for r in http_rows)
                    + "\n\nOver HTTP, cold is the best LoggedModels read first (`registry.stores.logged`: MLflow's "
                    "`search_logged_models` filters them by the runner and orders them by the objective's metric on "
                    "the server; the rest of the operating point and the budgets feasibility implies checked on each "
                    "as it comes, its version read and "
                    "judged from its card, until no unread one can rank first; where not sure, `cold_path` index: the "
                    "index loaded); index_load every version in one request; ttl_refresh waits for one REST "
                    "call (the newest version update; `search_registered_models` by name, its last update, aliases and "
                    "tags, read beside it for the next check); changed_index the "
                    "versions updated since, one short page; stale_read a `get_best` past "
                    "the TTL with `stale_s` while that change is read in the background (the last answer at once); "
                    "naive `search_model_versions` paged by 1000 over every version, then the pure selection."
                ]
                if http_rows
                else []
            ),
            "What each column times (p50 over repeated calls; warm over 100x as many). A Registry whose index is not "
            "loaded computes `get_best` in the store (`registry.stores.pushdown`: one SQL query over MLflow's own "
            "tables, read only, filters implied by feasibility, objective order, a page of versions judged exactly "
            f"in Python; the figures cut out of one card tag per version, `{names.TAG_CARD}`, with `split_part`, "
            "joined with `model_versions`); one whose index is loaded answers from memory:\n"
            "- first_ms: the first `get_best` after seeding, once;\n"
            "- warm: within the TTL, the answer cached per constraints, its artifact re-checked (one stat);\n"
            "- ttl_refresh: TTL expired, nothing changed: one watermark query (the registered model's last update, "
            "highest version, count of versions carrying their card, aliases);\n"
            "- changed_store: TTL expired after one more version, index not loaded: the watermark, then computed in "
            "the store;\n"
            "- changed_index: the same with the index loaded: the watermark, only the changed versions read again, "
            "selection in memory;\n"
            "- cold: everything dropped (`invalidate()`), connection pool open: computed in the store;\n"
            "- cold_process: a new Registry after every engine was disposed (new engine and first connection, then "
            "as cold), modules already imported;\n"
            "- index_load: the full index load (`candidates()` after `invalidate()`): every version and its tags, "
            "what `explain()`, promotion and the leaderboard read;\n"
            "- tag_rows: for scale, only fetching the model's tag rows (15 or 16 a version) as plain rows over the "
            "same pool, nothing aggregated or built: what any full read of MLflow's tables moves;\n"
            "- new_process_imports, new_process_first, new_process_wall: a fresh `python -c`: importing "
            "`registry.client` (mlflow imported at all: "
            + ", ".join(f"{r['store']} {'yes' if r['new_process_imports_mlflow'] else 'no'}" for r in rows)
            + "), then its first `get_best` (SQLAlchemy and the driver imported, engine, first connection, computed "
            "in the store), and the whole process's wall time including interpreter start (median of 3);\n"
            "- naive: `search_model_versions` over every version, then the same pure selection; seed_s: setup, "
            "not timed (N evaluations cloned, each its own run, LoggedModel and version"
            + (
                f"; the first {through_api} through MLflow's API, the rest the same rows replicated in SQL"
                if 0 < through_api < n
                else ""
            )
            + "; the PostgreSQL store then gets `VACUUM ANALYZE`, as autovacuum is off on this test server).",
            f"Machine load: 1-minute load average {load_before:.1f} before, {load_after:.1f} after, on "
            f"{os.cpu_count()} cores (this benchmark itself keeps about one core busy; figures taken above 1 load "
            "per core are slower than on a quiet machine).",
        ]
    )
    print(body)
    if not args.no_write:
        write_block("get_best", f"registry.get_best, {n} registered versions", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
