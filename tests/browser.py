"""Headless Chromium (Debian's package) for the tests that look at pages as a person would."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import service_missing

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        service_missing("Chromium", "no chromium on PATH; apt-get install -y chromium")
    return str(exe)


def _run(url: str, *extra: str, budget_ms: int = 0, timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cnnselect-chromium-") as profile:
        args = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra]
        if budget_ms:  # let single-page apps fetch and render before the page is captured
            args.append(f"--virtual-time-budget={budget_ms}")
        return subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout)


def screenshot(url: str, png: Path, width: int = 1280, height: int = 2000, budget_ms: int = 0):
    """Save a PNG of ``url`` (a ``file://`` or ``http://`` address)."""
    return _run(url, f"--screenshot={png}", f"--window-size={width},{height}", budget_ms=budget_ms)


def dump_dom(url: str, budget_ms: int = 15000) -> str:
    """The DOM after scripts ran: what a person would see, as text."""
    out = _run(url, "--dump-dom", budget_ms=budget_ms)
    return out.stdout
