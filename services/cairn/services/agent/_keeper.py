"""Ends an agent's jobs when the agent is gone: ``python -I -S _keeper.py``.

Run as a script by the agent's process backend (``_backends.py``), never imported. Its stdin is
the read end of a pipe whose only write end the agent holds; the agent writes the process
group of each job it starts (``+PGID`` and a newline). End of file means the agent is gone --
it closed the pipe, or died, kill -9 included, and the kernel closed it -- and the keeper
SIGKILLs every group it was told about, then leaves.

This reaches what the parent-death signal on a job's own process cannot: the processes the job
started (a shell's pipeline, ``sleep &``, a script's ``subprocess``), which stay in its group.
Once a second it forgets the groups that have no process left, so a group id the system hands
out again later is not signalled. It lives in a session of its own, so a Ctrl-C meant for the
agent's terminal does not end it first.
"""

from __future__ import annotations

import os
import select
import signal

_FORGET_EVERY_S = 1.0


def _exists(pgid: int) -> bool:
    """The group has a process, or its leader is alive (forked, not yet in its own session)."""
    for probe in (os.killpg, os.kill):
        try:
            probe(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            return True
        return True
    return False


def keep(fd: int) -> set[int]:
    """Read group ids until end of file; the groups that still exist then."""
    groups: set[int] = set()
    pending = b""
    while True:
        if not select.select([fd], [], [], _FORGET_EVERY_S)[0]:
            groups = {g for g in groups if _exists(g)}
            continue
        data = os.read(fd, 4096)
        if not data:
            return {g for g in groups if _exists(g)}
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line.startswith(b"+") and line[1:].isdigit():
                groups.add(int(line[1:]))


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the end of the pipe ends the keeper
    for pgid in keep(0):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    main()
