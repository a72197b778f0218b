"""Write one benchmark's results into its own block of docs/BENCHMARKS.md, with the command that produced them."""

from __future__ import annotations

import fcntl
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure below comes from a script in `bench/`; each block names the command that wrote it, when, and on what
machine. Re-running a command rewrites its own block only. No unit test is timed.
"""


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_block(name: str, title: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the block ``name`` in docs/BENCHMARKS.md."""
    if command is None:
        script = Path(sys.argv[0]).resolve()
        module = f"-m bench.{script.stem}" if script.parent == Path(__file__).resolve().parent else str(script)
        python = Path(sys.executable)
        python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python  # .venv or .venv-litert
        command = " ".join([str(python), module, *sys.argv[1:]])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nRun: {stamp} on {machine()}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    with open(DOC.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = DOC.read_text() if DOC.exists() else HEADER
        pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        DOC.write_text(text)


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)
