"""Agents and the scheduler as real processes, killed, stopped and restarted under jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.bus import EventStore, connect
from cairn.proto import subjects
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import RunAssigned, RunCompleted, RunFailed, RunRequeued
from cairn.rpc import ping_all
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.settings import Settings
from tests.conftest import JOB_SETTINGS, LEAKS_SOCKETS, settings_for
from tests.sdk.test_processes import Stack
from tests.services.test_jobs import history, wait_status

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


def job_env(settings: Settings, ws: str, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update(
        CAIRN_HOME=str(home),
        CAIRN_NATS_URL=settings.nats_url,
        CAIRN_NATS_USER=settings.nats_user or "",
        CAIRN_NATS_PASSWORD=settings.nats_password or "",
        CAIRN_WORKSPACE=ws,
        CAIRN_LOG_FORMAT="json",
        CAIRN_REQUEST_TIMEOUT="3",
        **{f"CAIRN_{k.upper()}": str(v) for k, v in JOB_SETTINGS.items()},
    )
    return env


class Procs:
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *argv: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    async def agent(self, env: dict[str, str], slots: int = 1) -> asyncio.subprocess.Process:
        return await self.spawn(
            *CAIRN, "agent", "--compute", "local", "--slots", str(slots), env=env
        )

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    proc.send_signal(sig)
                await proc.wait()


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    p = Procs()
    yield p
    await p.close()


def script(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / "job.py").write_text(textwrap.dedent(body))
    return folder


async def running(ws: AsyncWorkspace, run_id: str, attempt: int) -> None:
    await wait_status(ws, run_id, lambda s: s == "Running")
    for _ in range(200):
        rows = (await ws.client.ask(_get_job(run_id))).data
        if rows["attempt"] == attempt and rows["status"] == "Running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"attempt {attempt} of {run_id} never ran")


def _get_job(run_id: str) -> Any:
    from cairn.proto.jobs import GetJob

    return GetJob(run_id=run_id, wait_s=0)


async def test_kill_9_of_an_agent_requeues_its_run_to_another(
    ws: AsyncWorkspace, agent_settings: Settings, store: EventStore, procs: Procs, tmp_path: Path
) -> None:
    src = script(
        tmp_path,
        """
        import os, time
        if os.environ["CAIRN_ATTEMPT"] == "1":
            time.sleep(600)
        print("done on attempt", os.environ["CAIRN_ATTEMPT"])
    """,
    )
    first = await procs.agent(job_env(agent_settings, ws.name, tmp_path / "a"))
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    await running(ws, run_id, 1)
    first.kill()
    await first.wait()
    await procs.agent(job_env(agent_settings, ws.name, tmp_path / "b"))
    assert (await follow(ws, run_id, timeout=60))["status"] == "Completed"
    events = await history(store, ws.name, run_id)
    assigned = [e for e in events if isinstance(e, RunAssigned)]
    assert [a.attempt for a in assigned] == [1, 2] and assigned[0].agent_id != assigned[1].agent_id
    assert [e.attempt for e in events if isinstance(e, RunRequeued)] == [1]
    assert isinstance(events[-1], RunCompleted) and events[-1].attempt == 2


def _signals(tmp_path: Path) -> Path:
    """A folder the test and its jobs share files through. Jobs may write to what already
    exists beside their agent's home, not create entries in a folder that holds it (the
    test's own: ``_landlock.py``)."""
    folder = tmp_path / "signals"
    folder.mkdir(exist_ok=True)
    return folder


async def test_a_stopped_agent_past_its_lease_is_fenced_off_when_it_resumes(
    ws: AsyncWorkspace, agent_settings: Settings, store: EventStore, procs: Procs, tmp_path: Path
) -> None:
    """Attempt 1 finishes while its agent is SIGSTOPped; attempt 2 runs elsewhere. Resumed,
    the first agent's outputs and completion are refused: the run ends as attempt 2 says.
    Attempt 1's script, running on while its agent is stopped, logs a metric after attempt 2
    has started: refused too."""
    signals = _signals(tmp_path)
    started, tried = signals / "attempt-2-started", signals / "attempt-1-logged"
    src = script(
        tmp_path,
        f"""
        import os, pathlib, time
        from cairn.sdk import Run
        run = Run.get_context()
        attempt = os.environ["CAIRN_ATTEMPT"]
        started, tried = pathlib.Path({str(started)!r}), pathlib.Path({str(tried)!r})
        if attempt == "1":
            while not started.exists():
                time.sleep(0.05)
        else:
            started.touch()
            time.sleep(4.0)
        run.log("who", int(attempt))
        try:
            run.flush()
        except Exception as exc:
            print("refused:", type(exc).__name__, flush=True)
        if attempt == "1":
            tried.touch()
        os.makedirs("outputs", exist_ok=True)
        open("outputs/who.txt", "w").write(attempt)
        raise SystemExit(0 if attempt == "2" else 7)
    """,
    )
    first = await procs.agent(job_env(agent_settings, ws.name, tmp_path / "a"))
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    await running(ws, run_id, 1)
    first.send_signal(signal.SIGSTOP)
    await procs.agent(job_env(agent_settings, ws.name, tmp_path / "b"))
    await running(ws, run_id, 2)
    for _ in range(400):  # attempt 1's script has tried to log; its agent is still stopped
        if tried.exists():
            break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGCONT)  # its job exited (code 7) while it was stopped
    details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Completed", details
    events = await history(store, ws.name, run_id)
    assert not [e for e in events if isinstance(e, RunFailed)]
    assert events[-1].attempt == 2
    target = await ws.run(run_id).download_file("outputs/who.txt", tmp_path / "who.txt")
    assert target.read_text() == "2"
    assert (await ws.run(run_id).get_metrics())["who"] == 2  # attempt 1's point was refused
    assert first.returncode is None  # it lived on, and was refused


async def test_a_job_whose_agent_always_crashes_fails_and_leaves_no_ticket(
    ws: AsyncWorkspace, agent_settings: Settings, store: EventStore, procs: Procs, tmp_path: Path
) -> None:
    src = script(tmp_path, "import os, signal; os.kill(os.getppid(), signal.SIGKILL)\n")
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    # the job kills its parent: the agent only when the agent itself started the job cold,
    # unconfined (a warm or a confined start's parent is the agent's zygote, whose death ends
    # the job but not the agent)
    env = {
        **job_env(agent_settings, ws.name, tmp_path / "a"),
        "CAIRN_JOB_WARM_START": "0",
        "CAIRN_JOB_CONFINE_FILES": "0",
    }
    for _ in range(3):  # every agent that takes the job dies of it
        agent = await procs.agent(env)
        await asyncio.wait_for(agent.wait(), 60)
    details = await follow(ws, run_id, timeout=30)
    assert details["status"] == "Failed" and "gave up after 3 lost attempts" in details["error"]
    assigned = [e for e in await history(store, ws.name, run_id) if isinstance(e, RunAssigned)]
    assert [a.attempt for a in assigned] == [1, 2, 3]
    info = await ws.conn.js.stream_info("JOBS", subjects_filter=subjects.job(ws.name, "local"))
    assert not (info.state.subjects or {}), "a ticket of the failed run is left in JOBS"


@LEAKS_SOCKETS
async def test_the_scheduler_killed_under_200_jobs_restarts_and_all_complete_once(
    tmp_path: Path, procs: Procs, nats_py_leaks: None
) -> None:
    stack = Stack(tmp_path / "stack", ["tracking", "ingester", "artifacts", "registry"])
    await stack.start()
    try:
        service_env = {
            **stack.service_env(),
            **{f"CAIRN_{k.upper()}": str(v) for k, v in JOB_SETTINGS.items()},
            "CAIRN_JOB_TICKET_WINDOW": "16",
            "CAIRN_STATE_DIR": str(tmp_path / "sch"),
        }
        scheduler = await procs.spawn(*CAIRN, "serve", "scheduler", env=service_env)
        client_settings = settings_for(stack.server, service=False)
        agent_settings = settings_for(stack.server, service=False, agent=True)
        for n in range(2):
            await procs.agent(job_env(agent_settings, "ws1", tmp_path / f"agent{n}"), slots=2)
        conn = await connect(client_settings)
        ws = AsyncWorkspace(conn, "ws1", client_settings)
        await _until_serving(conn, "scheduler")
        marks = tmp_path / "marks"
        marks.mkdir()
        src = script(
            tmp_path,
            f"""
            import os
            open(os.path.join({str(marks)!r}, os.environ["CAIRN_RUN_ID"]), "a").write("x")
        """,
        )
        config = ScriptRunConfig(source_directory=src, script="job.py")
        run_ids = [await submit(ws, "jobs", config) for _ in range(200)]
        while len(list(marks.iterdir())) < 30:
            await asyncio.sleep(0.1)
        scheduler.kill()
        await scheduler.wait()
        await asyncio.sleep(1.0)
        await procs.spawn(*CAIRN, "serve", "scheduler", env=service_env)
        await _until_serving(conn, "scheduler")
        finals = [await follow(ws, r, timeout=120, poll_s=0.5) for r in run_ids]
        failed = [(d["run_id"], d.get("error")) for d in finals if d["status"] != "Completed"]
        assert Counter(d["status"] for d in finals) == {"Completed": 200}, failed
        service = await connect(stack.settings)  # reading the log is the services' business
        store = EventStore(service)
        for run_id in run_ids:
            ends = [e for e in await history(store, "ws1", run_id) if isinstance(e, RunCompleted)]
            assert len(ends) == 1
        await service.close()
        assert sorted(p.name for p in marks.iterdir()) == sorted(run_ids)
        assert all(p.read_text() == "x" for p in marks.iterdir()), "a job ran twice"
        await ws.close()
        await conn.close()
    finally:
        await stack.close()


async def _until_serving(conn: Any, service: str) -> None:
    for _ in range(150):
        if any(s["service"] == service for s in await ping_all(conn, wait_s=0.2)):
            return
    raise AssertionError(f"{service} never answered a ping")


async def test_an_undeliverable_ticket_fails_its_run_and_is_deleted(
    ws: AsyncWorkspace, agent_settings: Settings, tmp_path: Path
) -> None:
    """An 'agent' that pulls the ticket and dies before claiming, every time: JetStream
    gives up after max_deliver, and the scheduler turns the advisory into a failed run."""
    src = script(tmp_path, "print('never')\n")
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    agent = await connect(agent_settings)
    js = agent.js
    psub = await js.pull_subscribe_bind(durable=f"jobs-{ws.name}-local", stream="JOBS")
    deliveries = 0
    for _ in range(40):
        try:
            msgs = await psub.fetch(1, timeout=1)
        except Exception:
            msgs = []
        deliveries += len(msgs)  # and never acknowledged
        status = (await ws.client.ask(_get_job(run_id))).data["status"]
        if status == "Failed":
            break
    details = await follow(ws, run_id, timeout=10)
    assert details["status"] == "Failed" and "delivered 3 times" in details["error"]
    assert deliveries == 3
    info = await ws.conn.js.stream_info("JOBS", subjects_filter=subjects.job(ws.name, "local"))
    assert not (info.state.subjects or {})
    await psub.unsubscribe()
    await agent.close()


_ = (CreateWorkspace, Any)


@LEAKS_SOCKETS
async def test_two_scheduler_replicas_share_leases(
    ws: AsyncWorkspace,
    agents: Any,
    service_settings: Settings,
    store: EventStore,
    tmp_path: Path,
    nats_py_leaks: None,
) -> None:
    """A second scheduler in the queue group answers some of the agent's reports; a job that
    runs for three leases is still never taken back by either replica."""
    import msgspec

    from cairn.service import run_services
    from cairn.services.scheduler import SchedulerService

    stop, ready = asyncio.Event(), asyncio.Event()
    second = msgspec.structs.replace(service_settings, state_dir=str(tmp_path / "second"))
    task = asyncio.create_task(run_services(second, [SchedulerService], stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 15)
    try:
        await agents.start()
        src = script(tmp_path, "import time; time.sleep(3 * 2.0 + 1); print('done')\n")
        run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
        assert (await follow(ws, run_id, timeout=60))["status"] == "Completed"
        events = await history(store, ws.name, run_id)
        assert not [e for e in events if isinstance(e, RunRequeued)], "a live job was taken back"
        assert [e.attempt for e in events if isinstance(e, RunAssigned)] == [1]
    finally:
        stop.set()
        await task


@LEAKS_SOCKETS
async def test_a_job_that_ends_while_no_scheduler_runs_is_not_taken_back(
    tmp_path: Path, procs: Procs, nats_py_leaks: None
) -> None:
    """The job ends while the scheduler is down for three leases: its agent keeps the lease
    until its finish is recorded, so the restarted scheduler does not re-queue it."""
    stack = Stack(tmp_path / "stack", ["tracking", "ingester", "artifacts", "registry"])
    await stack.start()
    try:
        service_env = {
            **stack.service_env(),
            **{f"CAIRN_{k.upper()}": str(v) for k, v in JOB_SETTINGS.items()},
            "CAIRN_STATE_DIR": str(tmp_path / "sch"),
        }
        scheduler = await procs.spawn(*CAIRN, "serve", "scheduler", env=service_env)
        client_settings = settings_for(stack.server, service=False)
        agent_settings = settings_for(stack.server, service=False, agent=True)
        await procs.agent(job_env(agent_settings, "ws1", tmp_path / "agent"))
        conn = await connect(client_settings)
        ws = AsyncWorkspace(conn, "ws1", client_settings)
        await _until_serving(conn, "scheduler")
        mark = _signals(tmp_path) / "ran"
        src = script(
            tmp_path,
            f"""
            import time
            time.sleep(1.0)
            open({str(mark)!r}, "a").write("x")
        """,
        )
        run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
        await wait_status(ws, run_id, lambda s: s == "Running")
        scheduler.kill()
        await scheduler.wait()
        await asyncio.sleep(3 * 2.0)  # the job ends meanwhile; its finish cannot be recorded
        await procs.spawn(*CAIRN, "serve", "scheduler", env=service_env)
        assert (await follow(ws, run_id, timeout=60))["status"] == "Completed"
        service = await connect(stack.settings)  # reading the log is the services' business
        events = await history(EventStore(service), "ws1", run_id)
        await service.close()
        assert not [e for e in events if isinstance(e, RunRequeued)], "a finished job re-queued"
        assert mark.read_text() == "x"
        await ws.close()
        await conn.close()
    finally:
        await stack.close()


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies not counted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


async def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.mark.parametrize("kind", ["shell pipeline", "python script with a child"])
async def test_every_process_of_a_job_dies_with_its_killed_agent(
    kind: str, ws: AsyncWorkspace, agent_settings: Settings, procs: Procs, tmp_path: Path
) -> None:
    """Only the job's own process gets the parent-death signal; what it started (``sleep &``
    in a shell, a script's subprocess) stays in its process group, which must die too."""
    pgid_file = _signals(tmp_path) / "pgid"
    if kind == "shell pipeline":  # what a YAML command job runs: /bin/sh -c COMMAND
        config = ScriptRunConfig(
            command=["/bin/sh", "-c", f"echo $$ > {pgid_file}; sleep 300 & sleep 300"]
        )
    else:  # started warm, from the agent's zygote
        src = script(
            tmp_path,
            f"""
            import os, subprocess, time
            subprocess.Popen(["sleep", "300"])
            open({str(pgid_file)!r}, "w").write(str(os.getpgid(0)))
            time.sleep(300)
        """,
        )
        config = ScriptRunConfig(source_directory=src, script="job.py")
    agent = await procs.agent(job_env(agent_settings, ws.name, tmp_path / "a"))
    await submit(ws, "jobs", config)
    pgid = 0
    try:

        def written() -> int:
            text = pgid_file.read_text().strip() if pgid_file.exists() else ""
            return int(text) if text.isdigit() else 0

        pgid = await _poll(written, 60, "the job started")
        await _poll(lambda: len(group_members(pgid)) >= 2, 10, "the job and its child running")
        agent.kill()
        await agent.wait()
        await _poll(lambda: not group_members(pgid), 5, "every process of the job gone")
    finally:
        if pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
