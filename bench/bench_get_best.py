"""get_best with many registered versions, warm and cold, side by side with the naive way, on SQLite and PostgreSQL.

Setup (not timed): a fresh store per backend, one real evaluation logged and registered, then N versions cloned from
it through ``MlflowClient.create_model_version`` (real versions with the same tags the pipeline writes, varied
metrics, two runners), in parallel threads on PostgreSQL.

Timed:
- warm: ``get_best`` on a Registry whose index is loaded (the production steady state), many calls;
- cold reload: ``invalidate()`` then ``get_best`` (engine and connection pool already open);
- cold process: a new ``Registry`` (engine created, first connection, index load, artifact check);
- naive: ``search_model_versions`` paged over every version, metrics read from the version tags, then the same
  pure selection (what ``get_best`` did before the index).

    .venv/bin/python bench/bench_get_best.py            # 10,000 versions, sqlite and postgresql
    .venv/bin/python bench/bench_get_best.py --quick    # 500 versions, to prove it works
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import table, write_block  # noqa: E402

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DATASET = "bench"


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


def seed(uri: str, home: Path, n: int, workers: int) -> float:
    import numpy as np
    import torch
    from mlflow import MlflowClient

    from catalog import get_entry
    from catalog.weights import create_model
    from evaluators.export import export_onnx
    from registry import names
    from registry.settings import Settings
    from registry.tracking import DatasetRef, Evaluation, log_evaluation

    t0 = time.perf_counter()
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
    logged = log_evaluation(settings, ev)
    client = MlflowClient(uri)
    model_name = names.registered_model_name(DATASET)
    seed_mv = client.get_model_version(model_name, str(logged.version))
    base_tags = {k: v for k, v in seed_mv.tags.items() if not k.startswith(names.METRIC_TAG_PREFIX)}
    families = ["resnet", "efficientnet", "mobilenetv3", "efficientnet_lite", "densenet"]

    def one(i: int) -> None:
        rng = random.Random(i)
        runner = "cpu" if i % 2 else "edge"
        top1 = rng.uniform(0.5, 0.99)
        lat = rng.uniform(0.5, 80)
        metrics = {"top1": top1, "top1_ci_low": top1 - 0.02, "top1_ci_high": min(1.0, top1 + 0.02),
                   "latency_p95_ms": lat, "latency_p95_ub_ms": lat * 1.08, "params_m": rng.uniform(1, 100),
                   "size_mb": rng.uniform(1, 400), "gmacs": rng.uniform(0.05, 20), "memory_rss_mb": rng.uniform(5, 900),
                   "top1_drop_vs_fp32": rng.uniform(0, 0.05), "onnx_parity_ok": 1.0}  # fmt: skip
        tags = {**base_tags, names.TAG_VARIANT: f"m{i}", names.TAG_FAMILY: families[i % len(families)],
                names.TAG_RUNNER: runner, names.TAG_PRECISION: "fp32" if runner == "cpu" else "int8"}  # fmt: skip
        tags.update({names.metric_tag(k): repr(v) for k, v in metrics.items()})
        MlflowClient(uri).create_model_version(model_name, seed_mv.source, run_id=seed_mv.run_id, tags=tags)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(n - 1)))
    return time.perf_counter() - t0


def naive_get_best(uri: str, k) -> str:
    from mlflow import MlflowClient

    from registry import names
    from registry.index import candidate_from_tags, usable
    from registry.selection import select

    client = MlflowClient(uri)
    model_name = names.registered_model_name(DATASET)
    cands, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
        cands += [candidate_from_tags(model_name, str(mv.version), mv.run_id, mv.creation_timestamp, mv.tags)
                  for mv in page if mv.status == "READY" and usable(mv.tags)]  # fmt: skip
        token = page.token
        if not token:
            return select(cands, k)[0].candidate.version


def ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def bench(kind: str, n: int, workers: int, reps: int) -> dict[str, object]:
    from registry.client import Registry
    from registry.constraints import Constraints
    from registry.settings import Settings

    home = Path(tempfile.mkdtemp(prefix=f"cnnselect-bench-{kind}-"))
    uri = fresh_store(kind, home)
    seed_s = seed(uri, home, n, 1 if kind == "sqlite" else workers)
    settings = Settings(home=home, tracking_uri=uri)
    k = Constraints(dataset=DATASET, max_latency_ms=20, min_top1=0.8, max_params_m=50)
    reg = Registry(settings=settings, ttl_s=3600)
    want = reg.get_best(k).candidate.version
    assert naive_get_best(uri, k) == want, "naive and indexed answers differ"
    warm = []
    for _ in range(reps * 20):
        t = time.perf_counter()
        reg.get_best(k)
        warm.append(time.perf_counter() - t)
    reload_ = []
    for _ in range(reps):
        reg.invalidate(DATASET)
        t = time.perf_counter()
        reg.get_best(k)
        reload_.append(time.perf_counter() - t)
    cold = []
    for _ in range(reps):
        fresh = Registry(settings=settings)
        t = time.perf_counter()
        fresh.get_best(k)
        cold.append(time.perf_counter() - t)
        fresh.index.engine.dispose()
    naive = []
    for _ in range(max(1, reps // 3)):
        t = time.perf_counter()
        naive_get_best(uri, k)
        naive.append(time.perf_counter() - t)
    row: dict[str, object] = {"store": kind, "versions": n, "seed_s": round(seed_s, 1)}
    for name, samples in (("warm", warm), ("cold_reload", reload_), ("cold_process", cold), ("naive", naive)):
        p50, p99 = ms(samples)
        row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = p50, p99
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="500 versions, fewer repetitions")
    p.add_argument("--versions", type=int, default=10_000)
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--workers", type=int, default=8, help="seeding threads on PostgreSQL")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = p.parse_args(argv)
    n, reps = (500, 10) if args.quick else (args.versions, 30)
    rows = [bench(kind, n, args.workers, reps) for kind in args.stores.split(",")]
    cols = ["store", "versions", "warm_p50_ms", "warm_p99_ms", "cold_reload_p50_ms", "cold_process_p50_ms",
            "naive_p50_ms", "seed_s"]  # fmt: skip
    body = table(rows, cols) + (
        "\n\nTargets (PostgreSQL, 10,000 versions): warm p50 <= 1 ms, cold <= 50 ms. warm = index in memory; "
        "cold_reload = index reloaded with one aggregate SQL query; cold_process = new Registry (engine, first "
        "connection, load, artifact check of the winner); naive = search_model_versions over every version."
    )
    print(body)
    if not args.no_write:
        write_block("get_best", f"registry.get_best, {n} registered versions", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
