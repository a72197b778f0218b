"""Benchmark: cnnselect's best ``cpu-host`` answer per model against the fastest runtime measured (issue 16's target).

For each model (the demo profile's and ResNet-50, each at its own eval resolution, 224 px here), ``--weights
scratch``, on the real-photo folder of ``tests.photos``: the pipeline measures every cpu-host runner available in this
venv (``jobs.evaluate_isolated``, what ``cnnselect evaluate --profile full`` does), each model under a dataset of its
own (a copy of the photo folder named after it), so that ``get_best(Constraints(dataset=<model's>,
target="cpu-host", objective="latency"))`` answers for that model alone, across every runtime on this machine.

The answer is then judged against ``bench.runtimes``' interleaved table from the run before it (``--p50``, written by
``python -m bench.runtimes``): the answer's runtime at its own thread count there, over the fastest entry of the table
for that model at any thread count. Target: within 1.2x for every model. The pipeline's own figures are shown too
(the answer's p50 over the fastest p50 the pipeline measured for that model).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from bench import _common as c
from bench._report import table
from bench.runtimes import MODELS, P50_OUT

TARGET = 1.2


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--models", help=f"comma-separated (default: {', '.join(MODELS)})")
    p.add_argument("--p50", default=P50_OUT, help="bench.runtimes' JSON of the same run")
    p.add_argument("--state", default=".cnnselect/bench-host-answer")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    args = p.parse_args()

    state = Path(args.state)
    shutil.rmtree(state, ignore_errors=True)  # a fresh store: the answers come from this run's measurements only
    state.mkdir(parents=True)
    os.environ["CNNSELECT_HOME"] = str(state.resolve() / "home")  # before anything reads the settings

    from cnnselect import jobs
    from evaluators.runners import CPU_HOST, get_runner, host_runners
    from registry.client import Registry
    from registry.constraints import Constraints
    from tests.photos import write_photo_folder

    table_p50 = json.loads(Path(args.p50).read_text())["p50_ms"]
    models = args.models.split(",") if args.models else list(MODELS)
    if args.quick:
        models = models[:1]
    available = [r for r in host_runners(CPU_HOST) if get_runner(r).availability().available]
    photos = state / "photos"
    write_photo_folder(photos)
    latency = {"warmup": 5, "min_iters": 30, "min_seconds": 0.5, "max_seconds": args.latency_seconds, "attempts": 1}
    rows: list[dict[str, object]] = []
    misses = []
    for name in models:
        root = state / name.split(".")[0]
        shutil.copytree(photos, root)
        data = jobs.prepare_data(str(root))
        t0 = time.perf_counter()
        outs = jobs.evaluate_isolated(name, "full", str(root), available, "bench-host", "scratch", latency=latency)
        wall = time.perf_counter() - t0
        failed = {o["runner"]: o.get("error", "")[:120] for o in outs if o["status"] not in ("ok", "skipped")}
        a = Registry().get_best(Constraints(dataset=data["name"], target="cpu-host", objective="latency"))
        measured = {o["runner"]: o["metrics"]["latency_p50_ms"] for o in outs if o["status"] == "ok"}
        fastest_pipeline = min(measured, key=lambda r: measured[r])
        threads = 1 if a.threads == "1" else 2  # "all": every core of this 2-core host
        ours = table_p50.get(name, {})
        entries = {(r, int(t)): ms for r, by_t in ours.items() for t, ms in by_t.items()}
        (best_r, best_t), best_ms = min(entries.items(), key=lambda kv: kv[1])
        answer_ms = ours.get(a.runtime, {}).get(str(threads))
        ratio = answer_ms / best_ms if answer_ms else float("nan")
        if not ratio <= TARGET:
            misses.append(name)
        rows.append(
            {
                "model": name,
                "answer": f"{a.runtime} ({a.precision}, threads {a.threads})",
                "answer p50 ms (pipeline)": a.metrics["latency_p50_ms"],
                "pipeline's fastest": f"{fastest_pipeline} {measured[fastest_pipeline]:.3g} ms",
                "answer p50 ms (table)": answer_ms if answer_ms else "n/a",
                "table's fastest": f"{best_r} @{best_t}t {best_ms:.3g} ms",
                "× fastest (table)": f"{ratio:.2f}×",
                "runners": f"{len(measured)} ok" + (f", failed: {failed}" if failed else ""),
                "wall s": round(wall),
            }
        )
        print(rows[-1], flush=True)
    met = len(models) - len(misses)
    body = (
        f"Per model, cnnselect's answer to `get_best(Constraints(dataset=<that model's>, target=\"cpu-host\", "
        f'objective="latency"))` after the pipeline measured it on every cpu-host runner available here '
        f"({', '.join(available)}), at its eval resolution, `--weights scratch`, on the real-photo folder "
        f"({data['counts']['heldout']} held-out photos; latency ≤ {args.latency_seconds:g} s a measurement). Judged "
        f"against `bench.runtimes`' interleaved table of the run before (`{args.p50}`): the answer's runtime at its "
        f"thread count there over the table's fastest entry for that model at any thread count. Target ≤ "
        f"{TARGET}×: **met for {met} of {len(models)} models**"
        + (f" (missed: {', '.join(misses)})" if misses else "")
        + ".\n\n"
        + table(rows, list(rows[0]))
    )
    c.emit("host_answer", "Best cpu-host answer vs the fastest runtime measured", body, args.no_write)


if __name__ == "__main__":
    main()
