"""Progress bars for a sweep: the pipeline's ``progress(msg)`` messages advance a per-model bar (rich, on stderr).

The pipeline says, per model: ``pull (...)``, ``epoch N loss L`` once per fine-tuning epoch, ``export ONNX``, then per
runner ``<runner>: prepare``, ``<runner>: accuracy ...``, ``<runner>: latency``, ``<runner>: log to MLflow``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

RUNNER_STEPS = ("prepare", "accuracy", "latency", "log")


def steps_per_model(epochs: int, runners: int) -> int:
    return 2 + epochs + len(RUNNER_STEPS) * runners  # pull, epochs, export, then each runner's steps


class SweepProgress:
    """An overall bar (models) and one bar for the model in flight; transient on a terminal, silent otherwise."""

    def __init__(self, console: Console, models: int, runners: int, epochs: int) -> None:
        self.console = console
        self.total = steps_per_model(epochs, runners)
        self.bars = Progress(
            TextColumn("{task.description}", table_column=None),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.overall: TaskID = self.bars.add_task("sweep", total=models)
        self.current: TaskID | None = None

    def __enter__(self) -> SweepProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    def model(self, i: int, n: int, variant: str) -> Callable[[str], None]:
        """A ``progress(msg)`` callback for one model: every message is one step forward, its text the label."""
        if self.current is not None:
            self.bars.remove_task(self.current)
        variant = escape(variant)  # the bar's description is read as markup: a computed string must stay text
        task = self.bars.add_task(f"[{i}/{n}] {variant}", total=self.total)
        self.current = task

        def progress(msg: str) -> None:
            if msg.startswith("already measured"):
                self.bars.update(task, completed=self.total, description=f"[{i}/{n}] {variant}: {escape(msg)}")
                return
            self.bars.update(task, advance=1, description=f"[{i}/{n}] {variant}: {escape(msg)}")

        return progress

    def done(self) -> None:
        if self.current is not None:
            self.bars.update(self.current, completed=self.total)
        self.bars.advance(self.overall)

    def log(self, text: str) -> None:
        """A line above the bars (a finished model's outcome)."""
        self.bars.console.print(escape(text))
