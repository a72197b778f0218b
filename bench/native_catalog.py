"""Benchmark: the whole catalog at each model's own eval resolution (EfficientNet-B7 at 600 px), cpu + edge.

``--weights scratch`` (seeded random weights: no hub here), on a folder of real photographs (scikit-image's, laid out
as an ImageNet-style ImageFolder by ``tests.photos``: 67 held-out images of several sizes, aspect ratios and formats,
10 calibration images). Each model runs in its own process through ``cnnselect.jobs.evaluate_isolated`` (what
``cnnselect evaluate`` does), so a model that runs out of memory fails alone and the next one starts.

Per model: the eval size, wall time, the peak resident memory of the model's process (the largest of the logged
``peak_rss_mb_<stage>`` metrics; exact per stage on Linux), the stage that peaked, and the status. Targets: every entry
completes; peak RSS <= 8 GB per model. The nightly cost on N workers is the makespan of the measured wall times
scheduled longest first onto N identical workers (no overlap on a worker: the host pool has one slot).

Resumable: each finished model is appended to ``--state`` (JSONL) and skipped on a rerun; the block is written from
every model recorded there. Latency uses a reduced setting (``--latency-seconds`` per measurement), since the
subject here is completion, time and memory; accuracy is over the whole held-out split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import _common as c
from bench._report import table

TARGET_MB = 8 * 1024


def _makespan(seconds: list[float], workers: int) -> float:
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--models", help="comma-separated (default: every catalog entry but the test architectures)")
    p.add_argument("--state", default=".cnnselect/bench-native/results.jsonl")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument("--report-only", action="store_true", help="write the block from --state, measure nothing")
    args = p.parse_args()

    import os

    import catalog
    from catalog import Family

    state = Path(args.state)
    state.parent.mkdir(parents=True, exist_ok=True)
    home = state.parent / "home"
    os.environ["CNNSELECT_HOME"] = str(home.resolve())  # before anything reads the settings
    from cnnselect import jobs
    from tests.photos import write_photo_folder

    names = (
        args.models.split(",")
        if args.models
        else [e.name for e in catalog.list_entries() if e.family is not Family.TEST]
    )
    if args.quick:
        names = names[:2]
    done = (
        {json.loads(line)["model"]: json.loads(line) for line in state.read_text().splitlines()}
        if state.exists()
        else {}
    )
    root = state.parent / "photos"
    if not root.exists():
        write_photo_folder(root)
    latency = {"warmup": 2, "min_iters": 10, "min_seconds": 0.0, "max_seconds": args.latency_seconds, "attempts": 1}
    data = jobs.prepare_data(str(root))
    for name in names:
        if name in done or args.report_only:
            continue
        t0 = time.perf_counter()
        outs = jobs.evaluate_isolated(
            name, "full", str(root), ["cpu", "edge"], "bench-native", "scratch", latency=latency
        )
        wall = time.perf_counter() - t0
        peaks = {k: v for o in outs for k, v in o.get("metrics", {}).items() if k.startswith("peak_rss_mb_")}
        stage, peak = max(peaks.items(), key=lambda kv: kv[1]) if peaks else ("", float("nan"))
        row = {
            "model": name,
            "size": catalog.get_entry(name).input_size,
            "wall_s": wall,
            "peak_rss_mb": peak,
            "peak_stage": stage.removeprefix("peak_rss_mb_"),
            "status": ", ".join(f"{o['runner']} {o['status']}" for o in outs),
            "error": "; ".join(o.get("error", "") for o in outs if o.get("error"))[:300],
            "peaks": {k.removeprefix("peak_rss_mb_"): round(v) for k, v in peaks.items()},
        }
        done[name] = row
        with state.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)
    rows = [done[n] for n in names if n in done]
    if not rows:
        return
    complete = [r for r in rows if r["status"] == "cpu ok, edge ok"]
    within = [r for r in rows if r["peak_rss_mb"] <= TARGET_MB]
    walls = [r["wall_s"] for r in rows]
    shown = [
        {
            "model": r["model"],
            "px": r["size"],
            "wall s": round(r["wall_s"], 1),
            "peak RSS MB": int(round(r["peak_rss_mb"])) if r["peak_rss_mb"] == r["peak_rss_mb"] else "n/a",
            "peak at": r["peak_stage"],
            "status": r["status"] + (f" ({r['error']})" if r["error"] else ""),
        }
        for r in rows
    ]
    nightly = ", ".join(f"{n} worker{'s' if n > 1 else ''}: {_makespan(walls, n) / 60:.1f} min" for n in (1, 2, 4, 8))
    body = (
        f"`python -m bench.native_catalog` on this 2-core VM: {len(rows)} of {len(names)} entries run, each at its own "
        f"eval resolution, `--weights scratch`, runners cpu (onnxruntime FP32, all cores) and edge (INT8 QDQ, 1 "
        f"thread), on {data['counts']['heldout']} held-out real photos ({data['counts'].get('calibration', 0)} "
        f"calibration), each model in its own process. Latency reduced to ≤ {args.latency_seconds:g} s a "
        f"measurement (completion, time and memory are the subject). **{len(complete)} of {len(rows)} completed on "
        f"both runners; {len(within)} of {len(rows)} within the 8 GB peak-RSS target** (largest "
        f"{max(r['peak_rss_mb'] for r in rows):.0f} MB, {max(rows, key=lambda r: r['peak_rss_mb'])['model']}). "
        f"Sum of wall times {sum(walls) / 60:.1f} min; a nightly sweep of these on N workers (longest first, one "
        f"model at a time per worker): {nightly}.\n\n" + table(shown, list(shown[0]))
    )
    c.emit("native_catalog", "Full catalog at native resolution (cpu + edge, peak RSS per model)", body, args.no_write)


if __name__ == "__main__":
    main()
