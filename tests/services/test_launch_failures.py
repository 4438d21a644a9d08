"""A job whose process could not be started: a cause that may pass (a warm interpreter that
does not answer, the agent's side of the job refused by the system) is the agent's, retried
within the run's attempt budget and named; a cause of the job's own fails its run at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from cairn.bus import EventStore
from cairn.proto.events import RunCompleted, RunFailed, RunRequeued
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from tests.conftest import Agents
from tests.services.test_jobs import history

#: a job that records each run of itself (appending, so a second run shows) and its parent
MARK = """
    import os, sys
    marks = sys.argv[1]
    run = os.environ["CAIRN_RUN_ID"]
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ")
    open(os.path.join(marks, run + ".parent"), "wb").write(parent)
    open(os.path.join(marks, run + ".pid"), "w").write(str(os.getppid()))
    open(os.path.join(marks, run), "a").write("x")
"""


def _job(tmp_path: Path) -> tuple[ScriptRunConfig, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(textwrap.dedent(MARK))
    marks = tmp_path / "marks"  # beside the agent's state: the job may write in it
    marks.mkdir()
    config = ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(marks)])
    return config, marks


async def _run(ws: AsyncWorkspace, config: ScriptRunConfig) -> str:
    run_id = await submit(ws, "jobs", config)
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    return run_id


async def test_a_warm_interpreter_that_does_not_answer_starts_the_job_cold_once(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    """The zygote stopped (SIGSTOP: as starved as a process can be): a job's warm start is
    given up after ``job_warm_answer_s`` and the job starts cold, completing on its first
    attempt; once the zygote runs again it forks the request it was sent, and that child
    runs nothing of the job (it finds its go pipe closed)."""
    agents.settings = msgspec.structs.replace(agents.settings, job_warm_answer_s=1.0)
    config, marks = _job(tmp_path)
    await agents.start(slots=1)
    first = await _run(ws, config)
    assert "_zygote.py" in (marks / f"{first}.parent").read_text(), "the premise: a warm start"
    zygote = int((marks / f"{first}.pid").read_text())
    os.kill(zygote, signal.SIGSTOP)
    try:
        unanswered = await _run(ws, config)
        assert "_zygote.py" not in (marks / f"{unanswered}.parent").read_text()
        events = await history(store, ws.name, unanswered)
        assert not [e for e in events if isinstance(e, RunRequeued)]
        assert isinstance(events[-1], RunCompleted) and events[-1].attempt == 1
    finally:
        os.kill(zygote, signal.SIGCONT)
    # the zygote answers requests in order: a job it runs again comes after the one it was
    # sent while stopped (until it answers, jobs start cold)
    for _ in range(20):
        again = await _run(ws, config)
        if "_zygote.py" in (marks / f"{again}.parent").read_text():
            break
    else:
        raise AssertionError("the zygote never ran a job again once it could")
    assert int((marks / f"{again}.pid").read_text()) == zygote
    runs = sorted(p.name for p in marks.iterdir() if "." not in p.name)
    assert all((marks / run).read_text() == "x" for run in runs), "a job ran twice"
    assert unanswered in runs


def _gates(agent_id: str) -> Path:
    """The folder of an agent's job sockets (``AgentService.gates``)."""
    return Path(tempfile.gettempdir()) / f"cairn-gates-{agent_id}"


@contextmanager
def _gates_blocked(agent_id: str) -> Iterator[None]:
    """The agent's folder of job sockets replaced by a file: opening a job's socket fails
    (ENOTDIR, whoever the agent runs as) until it is a folder again."""
    gates = _gates(agent_id)
    shutil.rmtree(gates)
    gates.write_text("")
    try:
        yield
    finally:
        gates.unlink()
        gates.mkdir(mode=0o700)


async def _requeued(store: EventStore, ws: str, run_id: str) -> RunRequeued:
    async with asyncio.timeout(60):
        while True:
            found = [e for e in await history(store, ws, run_id) if isinstance(e, RunRequeued)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def test_a_job_the_agent_could_not_start_is_requeued_and_completes_once(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    config, marks = _job(tmp_path)
    agent_id = f"local-launch{os.getpid()}"
    await agents.start(slots=1, agent_id=agent_id)
    with _gates_blocked(agent_id):
        run_id = await submit(ws, "jobs", config)
        requeued = await _requeued(store, ws.name, run_id)
    assert requeued.attempt == 1
    assert f"agent {agent_id} could not start the job: cannot start" in requeued.reason
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    events = await history(store, ws.name, run_id)
    assert [e.attempt for e in events if isinstance(e, RunCompleted)] == [2]
    assert not [e for e in events if isinstance(e, RunFailed)]
    assert (marks / run_id).read_text() == "x"


async def test_a_launch_that_keeps_failing_ends_failed_with_its_last_cause(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    config, marks = _job(tmp_path)
    agent_id = f"local-launch{os.getpid()}"
    await agents.start(slots=1, agent_id=agent_id)
    with _gates_blocked(agent_id):
        run_id = await submit(ws, "jobs", config)
        details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Failed", details
    assert "gave up after 3 lost attempts; the last: " in details["error"]
    assert f"agent {agent_id} could not start the job: cannot start" in details["error"]
    events = await history(store, ws.name, run_id)
    assert [e.attempt for e in events if isinstance(e, RunRequeued)] == [1, 2]
    assert all("could not start the job" in e.reason for e in events if isinstance(e, RunRequeued))
    assert not (marks / run_id).exists()


async def test_a_command_the_system_refuses_fails_its_run_at_once_with_the_cause(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    """An argument with a NUL byte cannot be given to a program: the job's own fault, not
    retried."""
    agents.settings = msgspec.structs.replace(
        agents.settings, job_warm_start=False, job_confine_files=False
    )
    config, marks = _job(tmp_path)
    config = ScriptRunConfig(
        source_directory=config.source_directory, script="job.py", arguments=[f"{marks}\0"]
    )
    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", config)
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Failed", details
    assert "cannot start" in details["error"] and "null byte" in details["error"]
    events = await history(store, ws.name, run_id)
    assert not [e for e in events if isinstance(e, RunRequeued)]
    assert isinstance(events[-1], RunFailed) and events[-1].attempt == 1
    assert events[-1].exit_code == 127
    assert not (marks / run_id).exists()
