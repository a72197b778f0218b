"""The command line's two consoles and its exit codes (see ``cnnselect.cli``)."""

from __future__ import annotations

from rich.console import Console

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_INFEASIBLE, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
console = Console(stderr=False)  # results (and, with --json, exactly one JSON document)
err_console = Console(stderr=True)  # progress, logs and, with --json, everything meant for people
