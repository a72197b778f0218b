"""The main job's wall time on a fresh store (target <= 10 min on 2 cores), then a rerun with nothing new (target:
<= 5% of the first run's time: every (model, runner) already measured is skipped, no weights are re-trained)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import table, write_block

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "cnnselect")


def timed(args: list[str], home: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "CNNSELECT_HOME": str(home), "COLUMNS": "160"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    out = subprocess.run([CLI, *args], cwd=REPO, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cnnselect-bench-demo-"))
    first_s, first = timed(["demo", "--profile", a.profile], home)
    if first.returncode != 0:
        raise SystemExit(f"demo failed ({first.returncode}):\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
    rerun_s, rerun = timed(["evaluate", "--profile", a.profile, "--json"], home)
    skipped = rerun.stdout.count('"status": "skipped"')
    remeasured = rerun.stdout.count('"status": "ok"') + rerun.stdout.count('"status": "failed"')
    ratio = rerun_s / first_s
    rows = [
        {"run": f"`cnnselect demo --profile {a.profile}` (fresh store)", "wall_s": round(first_s, 1),
         "target": "<= 600 s", "met": "yes" if first_s <= 600 else "NO"},
        {"run": "rerun, nothing new (`cnnselect evaluate`)", "wall_s": round(rerun_s, 1),
         "target": "<= 5% of first", "met": f"{ratio:.1%} " + ("yes" if ratio <= 0.05 else "NO")},
    ]  # fmt: skip
    tail = "\n".join(line for line in first.stdout.splitlines() if line.strip())[-6000:]
    body = (
        table(rows, ["run", "wall_s", "target", "met"])
        + f"\n\nThe rerun skipped {skipped} (model, runner) pairs already measured and measured {remeasured} again (a"
        " pair whose first measurement failed, e.g. at the results gate, is not measured yet). With nothing new, its"
        " time is process start (Python and MLflow imports), the manifest read, one MLflow search for the data gate"
        " and one per model: torch and Great Expectations are not even imported. The first run's is dominated by"
        " fine-tuning (8 epochs, 32 px) and by the latency loops.\n\nWhat the first run printed:\n\n```text\n"
        + tail
        + "\n```"
    )
    print(body)
    print(f"\nstore kept at CNNSELECT_HOME={home}")
    if not a.no_write:
        write_block(f"demo-{a.profile}", f"Main job: `make demo` wall time and incremental rerun ({a.profile})", body,
                    command=f"python -m bench.demo --profile {a.profile}")  # fmt: skip


if __name__ == "__main__":
    main()
