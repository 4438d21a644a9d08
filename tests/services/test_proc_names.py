"""What the agent reads of ``/proc/<pid>/status`` about a job's or replica's processes: a
process names itself in any bytes (``prctl(PR_SET_NAME)``, its image's entrypoint), so a name
that is no UTF-8 must neither break the peer check of ``serve.sock`` nor a container's launch;
and a container's first process is told apart from any other process of a nested pid
namespace."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.services.agent._backends import _container_pid, _shown_here
from cairn.services.agent._serving import descends_from

#: a process that names itself ``ent\xffry`` (not UTF-8), starts a child, says both pids,
#: and sleeps
NAMED = textwrap.dedent(
    """
    import ctypes, subprocess, sys, time
    ctypes.CDLL(None).prctl(15, b"ent\\xffry", 0, 0, 0)  # PR_SET_NAME
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


class Named:
    def __init__(self, proc: asyncio.subprocess.Process, child: int) -> None:
        self.proc, self.child = proc, child


def _status(pid: int) -> bytes:
    return Path(f"/proc/{pid}/status").read_bytes()


@pytest.fixture
async def named() -> AsyncIterator[Named]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", NAMED, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        child = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert b"Name:\tent\xffry" in _status(proc.pid), "the premise: a name that is no UTF-8"
        yield Named(proc, child)
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()


async def test_a_process_named_in_no_utf8_is_still_traced_to_its_parents(named: Named) -> None:
    """The peer check walks the parents of a replica's process: one of them (or the peer
    itself) named in bytes that are no UTF-8 is read, not a crash of the accept."""
    assert descends_from(named.proc.pid, os.getpid())
    assert descends_from(named.child, named.proc.pid)  # through the oddly named parent
    assert descends_from(named.child, os.getpid())
    assert not descends_from(named.proc.pid, named.child)


class _Container:
    """What ``_container_pid`` reads of an engine's container: ``reload()`` and ``attrs``."""

    def __init__(self, pid: int) -> None:
        self.attrs: dict[str, Any] = {"State": {"Pid": pid}}

    def reload(self) -> None:
        pass


async def test_a_first_process_named_in_no_utf8_does_not_break_a_launch(named: Named) -> None:
    """A container's first process (here: a process of this agent's pid namespace, which is
    no container's) named in bytes that are no UTF-8: its pid is read as not shown here,
    never an error raised after the container started."""
    assert not _shown_here(named.proc.pid)
    assert _container_pid(_Container(named.proc.pid)) is None
    assert _container_pid(_Container(0)) is None


def _unshare() -> str:
    found = shutil.which("unshare")
    if found is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run(
        [found, "--pid", "--fork", "--kill-child", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no new pid namespace may be made here: {probe.stderr.decode()[-200:]}")
    return found


def _child(pid: int) -> int:
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


async def test_only_a_nested_namespaces_first_process_is_a_containers() -> None:
    """Of a nested pid namespace (a container's), its first process is shown here as the
    container's; another process in it (its pid 2) is not, nor is a process of ours."""
    unshare = _unshare()
    # unshare forks the namespace's first process (a shell), which starts a second one
    proc = await asyncio.create_subprocess_exec(
        unshare,
        "--pid",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        "sleep 120 & echo ready; wait",
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        first = _child(proc.pid)
        second = _child(first)
        assert _shown_here(first)
        assert not _shown_here(second)
        assert not _shown_here(proc.pid) and not _shown_here(os.getpid())
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()
