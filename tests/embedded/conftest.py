from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.embedded import free_port


@pytest.fixture
def up_home(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A fresh home and port for ``cairn up``; the servers started over it are killed after."""
    home, port = tmp_path / "cairn", free_port()
    yield home, port
    pid_file = home / "nats" / "nats.pid"
    if pid_file.exists():  # never leave a server behind, whatever happened
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture
def ups() -> Iterator[list[subprocess.Popen[str]]]:
    """The ``cairn up`` processes a test starts (append ``Up.proc``): gone after it, whatever
    happened (a failed test must not leave a stack running)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
