"""Warm starts: a job's Python process forked from an interpreter that has already started.

Starting the interpreter (``site``, the standard library's imports) is most of what a short
job costs; a zygote per interpreter (``_zygote.py``) pays it once and forks each job's process
from there. A job goes this way only when it is ``python <script> ...`` or ``python -m
<module> ...`` and every variable Python reads at start-up has the same value for the job as
for the zygote; anything else, and any failure of the zygote, is a cold start. The forked
process is a new process in a session of its own, with the job's folder, environment, argv
and output pipe; see ``_zygote.py`` for what it does not share with a cold start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.log import get_logger

__all__ = ["Confinement", "Zygote", "warm_argv"]

log = get_logger("cairn.agent")
_ZYGOTE = str(Path(__file__).with_name("_zygote.py"))
_STARTUP_PREFIXES = ("PYTHON", "LC_")
_STARTUP_NAMES = {"LANG", "LANGUAGE", "HOME", "PYTHONUNBUFFERED"}


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables the interpreter reads when it starts."""
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) or k in _STARTUP_NAMES}


def warm_argv(python: str, argv: list[str]) -> list[str] | None:
    """What the zygote runs for ``argv`` (the script or ``-m module``, then the arguments),
    or None when ``argv`` is not a plain ``python <script>`` or ``python -m <module>``."""
    if len(argv) < 2 or argv[0] != python:
        return None
    if argv[1] == "-m":
        return argv[1:] if len(argv) > 2 and not argv[2].startswith("-") else None
    return argv[1:] if not argv[1].startswith("-") else None


class Confinement:
    """One job's Landlock rules: the walls (shared by every job while ``walls_id`` lasts)
    and its own (its folder, its socket, its environment, its inputs)."""

    def __init__(
        self, walls_id: float, walls: list[tuple[str, int]], own: list[tuple[str, int]]
    ) -> None:
        self.walls_id, self.walls, self.own = walls_id, walls, own

    @property
    def rules(self) -> list[tuple[str, int]]:
        return [*self.walls, *self.own]


class Zygote:
    """One warm interpreter, started on first use and again after it dies."""

    def __init__(
        self,
        python: str,
        env: dict[str, str],
        wrap: Callable[[list[str]], list[str]],
        *,
        answer_s: float = 30.0,
    ) -> None:
        self.python, self.env, self.wrap, self.answer_s = python, env, wrap, answer_s
        self.startup = _startup_env(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._next = 0
        self._pids: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        #: False from a launch it did not answer in time until its next message (a zygote
        #: stopped or starved): the agent starts jobs cold meanwhile instead of waiting again
        self.answering = True

    def fits(self, env: dict[str, str]) -> bool:
        return _startup_env(env) == self.startup

    def _start(self) -> socket.socket:
        self._walls_sent: float | None = None  # a new interpreter has none
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._proc = subprocess.Popen(
                self.wrap([self.python, _ZYGOTE, str(theirs.fileno())]),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        ours.setblocking(False)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        self._sock = ours
        return ours

    def _readable(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self.answering = True
            msg = json.loads(data)
            if "exit" in msg:
                future = self._exits.pop(int(msg["pid"]), None)
                if future is not None and not future.done():
                    future.set_result(int(msg["exit"]))
            else:  # forked: its exit may be the very next message, so it is awaited from now
                pid = int(msg["pid"])
                exited = self._exits[pid] = asyncio.get_running_loop().create_future()
                started = self._pids.pop(int(msg["id"]), None)
                if started is not None and not started.done():
                    started.set_result((pid, exited))
                else:  # its launch gave up waiting: nobody follows this child, so it must go
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _lost(self) -> None:
        """The zygote died: its children died with it (SIGKILL, as for a cold start whose
        agent died), and the next job starts a new one."""
        self.close()
        log.warning("zygote_lost", python=self.python)

    async def launch(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        confine: Confinement | None = None,
        *,
        execute: bool = False,
    ) -> tuple[int, int, asyncio.Future[int], int]:
        """Fork a job: its pid, the read end of its output pipe, its exit code to come, and
        its go pipe. The child runs nothing of the job until a byte is written on the go
        pipe: the caller writes it once it has taken the child as its job's process (its
        output joined to the loop), and closes it unwritten on any failure, on which the
        child leaves by itself. ``confine``: the Landlock rules the child confines itself to
        before it runs the job (the walls are sent when this zygote has not had them yet).
        ``execute``: ``argv`` is a whole command (its program first), which the child
        executes — a cold start that the zygote only launches, confined without forking the
        agent.

        ``OSError`` when the zygote could not be asked; ``TimeoutError`` when it did not answer
        within ``answer_s`` (:attr:`answering` is False then, until it says something again).
        Either way no child of this request runs the job: one forked late finds its go pipe
        closed unwritten and leaves (and is killed when its pid arrives), so a cold start is
        safe."""
        sock = self._sock or self._start()
        self._next += 1
        ident = self._next
        started: asyncio.Future[tuple[int, asyncio.Future[int]]] = (
            asyncio.get_running_loop().create_future()
        )
        job: dict[str, Any] = {"id": ident, "argv": argv, "cwd": str(cwd), "env": env}
        if execute:
            job["exec"] = True
        if confine is not None:
            job.update(rules=confine.own, walls_id=confine.walls_id)
            if self._walls_sent != confine.walls_id:
                job["walls"] = confine.walls
        body = json.dumps(job).encode()
        opened: list[int] = []  # every end made here, each closed on a failure
        try:
            read, write = os.pipe()
            opened += (read, write)
            go_read, go = os.pipe()
            opened += (go_read, go)
            self._pids[ident] = started
            try:
                socket.send_fds(sock, [body], [write, go_read])
            finally:
                os.close(write)
                os.close(go_read)
                opened = [read, go]
            if "walls" in job:  # the zygote has them now (not before the send succeeded)
                self._walls_sent = job["walls_id"]
            try:
                pid, exited = await asyncio.wait_for(started, self.answer_s)
            except TimeoutError:
                self.answering = False  # until it says something again
                raise
        except BaseException:
            self._pids.pop(ident, None)
            for fd in opened:  # the go pipe unwritten: a child forked from now on leaves
                os.close(fd)
            raise
        return pid, read, exited, go

    def close(self) -> None:
        self.answering = True  # the next launch starts a new interpreter
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()  # end of file: the zygote leaves
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(5)
        for started in self._pids.values():
            if not started.done():
                started.set_exception(OSError("the zygote died before the job started"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-signal.SIGKILL)
        self._pids.clear()
        self._exits.clear()
