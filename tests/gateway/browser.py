"""A real browser for the studio's tests: Debian's chromium driven by playwright (async API).

One browser per test session (starting one takes a second); each test gets a fresh context
(its own cookies and storage) and a page. A machine without chromium gets it from apt when
the tests run as root; otherwise the browser tests are skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def ensure_chromium() -> str | None:
    """None when ``CHROMIUM`` is there (installed now if need be), else why it is not."""
    if Path(CHROMIUM).exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{CHROMIUM} is missing and apt-get cannot install it (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}"
    return None if Path(CHROMIUM).exists() else f"apt installed no {CHROMIUM}"


async def log_in(page: Any, base_url: str, user: str, password: str, target: str) -> None:
    """Sign in through the login form, as a person does, landing on ``target``."""
    await page.goto(f"{base_url}{target}")
    await page.wait_for_url(re.compile(r".*/login\?next=.*"))
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(re.escape(base_url + target.split("?")[0]) + r".*"))


async def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page PNG of ``page`` under ``folder`` (the test's tmp_path)."""
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
