"""What a person at a terminal sees, read from a real pseudo-terminal (``os.openpty``) that a
script of the sync SDK writes to, against the real services: an upload's bar ends at 100 %
with its total and rate and stays on screen; a script whose stderr is no terminal shows no
bar; ``wait_for_completion(show_output=True)`` ends with the run's id and status, and says
which compute target has no agent and how to start one."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.proto.assets import ComputeSpec
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env

SCRIPT = Path(__file__).with_name("terminal_script.py")
_CONTROL = re.compile(r"\x1b\[(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]+|\x1b")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: carriage returns overwrite, ``ESC[K`` erases
    to the end of the line, ``ESC[nA`` moves up (what tqdm and the wait line use)."""
    lines, row, col = [""], 0, 0
    for match in _CONTROL.finditer(raw):
        token = match.group(0)
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif match.group(2) == "A":
            row = max(row - int(match.group(1) or 1), 0)
        elif match.group(2) == "K":
            lines[row] = lines[row][:col]
        elif not token.startswith("\x1b"):
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return [line.rstrip() for line in lines if line.strip()]


class Terminal:
    """A script on a pseudo-terminal of 120 columns (stdout, and stderr unless it goes to a
    pipe), read as it writes."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, tty_stderr: bool):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave if tty_stderr else subprocess.PIPE,
            env={**env, "TERM": "xterm", "COLUMNS": "120"},
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""
        self.closed = False

    @property
    def text(self) -> str:
        return self.raw.decode(errors="replace")

    async def _chunk(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.master, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(self.master)
        try:
            return os.read(self.master, 65536)
        except OSError:  # EIO: the script has exited and the terminal has nothing more
            return b""

    async def until(self, seen: Callable[[str], bool], timeout: float) -> bool:
        """Read until ``seen(text)`` or the end of the output; whether it was seen."""
        async with asyncio.timeout(timeout):
            while not seen(self.text) and not self.closed:
                chunk = await self._chunk()
                self.closed = not chunk
                self.raw += chunk
        return seen(self.text)

    async def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Read to the end; the exit code and what went to the stderr pipe."""
        await self.until(lambda _: False, timeout)
        err = await asyncio.to_thread(self.proc.stderr.read) if self.proc.stderr else b""
        code = await asyncio.to_thread(self.proc.wait, 30)
        return code, err.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        os.close(self.master)


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _bar_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"\d+%\|", line)]


async def test_an_upload_of_150_mb_shows_a_bar_that_ends_at_100_and_stays(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    big = _sparse(tmp_path / "big.bin", 150_000_000)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    term = Terminal(["upload", str(big)], env=env, cwd=tmp_path, tty_stderr=True)
    try:
        code, _ = await term.finish()
    finally:
        term.close()
    assert code == 0, term.text[-3000:]
    lines = screen(term.text)
    bars = _bar_lines(lines)
    assert len(bars) == 1, lines  # one bar, redrawn in place: never a new line per frame
    assert re.search(r"big\.bin: 100%\|█+\| 150M/150M \[[\d:]+<[\d:]+, +[\d.]+[kMG]?B/s\]", bars[0])
    assert lines.index(bars[0]) < lines.index("uploaded"), "the bar is gone from the screen"
    first = re.search(r"(\d+)%\|", term.text)
    assert first is not None and first.group(1) == "0", "a fresh upload starts at 0 %"


async def test_no_bar_when_stderr_is_not_a_terminal(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    big = _sparse(tmp_path / "big.bin", 20_000_000)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    term = Terminal(["upload", str(big)], env=env, cwd=tmp_path, tty_stderr=False)
    try:
        code, err = await term.finish()
    finally:
        term.close()
    assert code == 0, err[-3000:]
    assert screen(term.text) == ["uploaded"]
    assert "%|" not in err and "B/s" not in err and "big.bin" not in err


JOB = """\
import time
print("hello from the job", flush=True)
time.sleep(0.5)
print("bye", flush=True)
"""


async def test_wait_for_completion_ends_with_the_run_id_and_status(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "job.py").write_text(JOB)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    id_file = tmp_path / "run-id"
    args = ["wait", "local", str(tmp_path / "src"), str(id_file)]
    term = Terminal(args, env=env, cwd=tmp_path, tty_stderr=True)
    try:
        code, _ = await term.finish()
    finally:
        term.close()
    assert code == 0, term.text[-3000:]
    run_id = id_file.read_text()
    lines = screen(term.text)
    assert lines[-1] == f"Run {run_id}: Completed", lines
    assert lines.index("hello from the job") < lines.index("bye") < len(lines) - 1


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
async def test_a_job_for_a_compute_target_without_agents_says_how_to_start_one(
    ws: AsyncWorkspace, client_settings: Settings, tmp_path: Path, tty: bool
) -> None:
    compute = f"nowhere-{uuid.uuid4().hex[:8]}"
    await ws.assets.create_compute(compute, ComputeSpec(kind="cluster"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "job.py").write_text(textwrap.dedent(JOB))
    env = sdk_env(client_settings, ws.name, tmp_path / "home")
    id_file = tmp_path / "run-id"
    args = ["wait", compute, str(tmp_path / "src"), str(id_file)]
    term = Terminal(args, env=env, cwd=tmp_path, tty_stderr=tty)
    hint = f"no agent serves compute {compute} — start one with `cairn agent --compute {compute}`"
    try:
        if tty:  # the live line says it
            assert await term.until(lambda text: hint in text, timeout=30), term.text
        else:  # a line of its own on stderr: read it as it comes
            assert term.proc.stderr is not None
            said = b""
            async with asyncio.timeout(30):
                while hint.encode() not in said:
                    line = await asyncio.to_thread(term.proc.stderr.readline)
                    assert line, said.decode()
                    said += line
        run_id = id_file.read_text()
        assert f"Run {run_id}: {hint}".encode() in (term.raw if tty else said)
        await ws.run(run_id).cancel("no agent")
        code, err = await term.finish()
    finally:
        term.close()
    assert code == 0, (term.text + err)[-3000:]
    last = screen(term.text)[-1] if tty else err.strip().splitlines()[-1]
    assert last == f"Run {run_id}: Canceled"
