"""An agent's host partitioned from NATS (its connection cut through a proxy, the process
alive) past its lease, then healed: the scheduler takes the job back as lost and another agent
runs it; the partitioned agent's late report of the same job is refused (fenced by attempt
number in the run aggregate), so the run ends once, as the second attempt says. And a
scheduler replica partitioned the same way takes back no live job once healed.

One server only: a client of a cluster learns the other nodes' addresses from the server
(``connect_urls``) and reconnects around a proxy in front of one of them, so partitioning a
process from a cluster takes a network namespace, not a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from cairn.bus import connect
from cairn.errors import StaleAttempt
from cairn.proto.events import (
    ArtifactCommitted,
    Event,
    RunAssigned,
    RunCompleted,
    RunRequeued,
    RunStarted,
)
from cairn.proto.jobs import FinishJob, derived_id
from cairn.proto.streams import LEASES_BUCKET
from cairn.rpc import Client
from cairn.sdk import ScriptRunConfig
from cairn.sdk._jobs import submit
from tests.cluster.processes import Spawned
from tests.cluster.test_services_replicas import END, LogView, ServiceStack, service_stack
from tests.conftest import JOB_SETTINGS, LEAKS_SOCKETS

#: the tests' short leases (a lost agent is noticed in seconds), a little longer on a loaded
#: machine
SETTINGS: dict[str, object] = {**JOB_SETTINGS, "job_lease_s": 3.0}
SERVICES = ("tracking", "ingester", "artifacts", "registry", "scheduler", "scheduler")

#: marks each attempt's start and end in the signals folder, and runs until released
HELD = """\
import os, pathlib, sys, time
signals = pathlib.Path(sys.argv[1])
attempt = os.environ["CAIRN_ATTEMPT"]
(signals / f"started-{attempt}").write_text("")
while not (signals / "release").exists():
    time.sleep(0.05)
print("attempt", attempt, "done", flush=True)
(signals / f"ended-{attempt}").write_text("")
"""


async def _until(view: LogView, what: str, check: object, timeout: float = 60) -> list[Event]:
    """The run's events once ``check(events)`` holds (read from the log)."""
    assert callable(check)
    async with asyncio.timeout(timeout):
        while True:
            await view.refresh()
            events = view.runs.get(what, [])
            if check(events):
                return events
            await asyncio.sleep(0.2)


async def _file(path: Path, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(path.exists):
            await asyncio.sleep(0.1)


def _refusals(agent: Spawned, run_id: str) -> list[str]:
    """What the agent's log says about refused reports of ``run_id``."""
    found = []
    for line in agent.log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("run_id") == run_id and entry.get("event") in (
            "finish_refused_stale",
            "attempt_stale",
        ):
            found.append(entry["event"])
    return found


@pytest.mark.timeout(240)
@LEAKS_SOCKETS
async def test_a_partitioned_agent_loses_its_job_and_its_late_report_is_refused(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    async with service_stack(tmp_path, SETTINGS, SERVICES) as stack:
        signals = tmp_path / "signals"
        signals.mkdir()
        src = tmp_path / "src"
        src.mkdir()
        (src / "job.py").write_text(HELD)
        cut_off = await stack.agent("agent-1", slots=1, proxied=True)
        proxy = stack.proxies["agent-1"]
        config = ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(signals)])
        run_id = await submit(stack.ws, "jobs", config)
        view = LogView(stack.store, stack.ws.name)
        await _until(view, run_id, lambda ev: any(isinstance(e, RunStarted) for e in ev))
        await _file(signals / "started-1")
        await stack.agent("agent-2", slots=1)

        proxy.cut()  # agent-1's host is partitioned: its process and its job run on
        events = await _until(
            view, run_id, lambda ev: [e.attempt for e in ev if isinstance(e, RunStarted)] == [1, 2]
        )
        assert [e.attempt for e in events if isinstance(e, RunRequeued)] == [1]
        first, second = (e for e in events if isinstance(e, RunAssigned))
        assert first.agent_id != second.agent_id
        await _file(signals / "started-2")

        (signals / "release").write_text("")  # both attempts' jobs end, exit code 0
        await _file(signals / "ended-1")
        events = await _until(view, run_id, lambda ev: any(isinstance(e, END) for e in ev))
        assert cut_off.alive, cut_off.tail()
        reconnects = proxy.accepted
        proxy.heal()
        async with asyncio.timeout(90):  # its report of attempt 1, sent late, is refused
            while not _refusals(cut_off, run_id):
                await asyncio.sleep(0.2)
        assert proxy.accepted > reconnects, "the partitioned agent never came back"

        # the fence itself: attempt 1's finish, as its agent would send it again, is refused
        agent_conn = await connect(stack.settings_as(service=False, agent=True))
        try:
            finish = FinishJob(
                command_id=derived_id("finish", stack.ws.name, run_id, 1),
                run_id=run_id,
                attempt=1,
                outcome="completed",
                exit_code=0,
            )
            with pytest.raises(StaleAttempt):
                await Client(agent_conn, stack.ws.name).send(finish)
        finally:
            await agent_conn.close()

        await view.refresh()
        events = view.runs[run_id]
        ends = [e for e in events if isinstance(e, END)]
        assert len(ends) == 1 and isinstance(ends[0], RunCompleted) and ends[0].attempt == 2
        assert [e.attempt for e in events if isinstance(e, RunAssigned)] == [1, 2]
        assert [e.attempt for e in events if isinstance(e, RunStarted)] == [1, 2]
        requeue = next(i for i, e in enumerate(events) if isinstance(e, RunRequeued))
        late = [e for e in events[requeue:] if getattr(e, "attempt", None) == 1]
        assert late == [e for e in late if isinstance(e, RunRequeued)], late
        files = [e for e in events if isinstance(e, ArtifactCommitted)]
        assert files, "attempt 2's log was not stored"
        assert cut_off.alive


async def _renewed_after(stack: ServiceStack, run_id: str, moment: float) -> None:
    """Until the run's lease renewal in the bucket (which the agent's reports write, through
    whichever scheduler replica answers them) is dated after ``moment``."""
    kv = await stack.conn.js.key_value(LEASES_BUCKET.bucket)
    async with asyncio.timeout(max(30.0, moment - time.time() + 30.0)):
        while True:
            with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                entry = await kv.get(f"{stack.ws.name}.{run_id}")
                if entry.value and json.loads(entry.value)[1] > moment:
                    return
            await asyncio.sleep(0.2)


@pytest.mark.timeout(240)
@LEAKS_SOCKETS
async def test_a_partitioned_scheduler_replica_takes_back_no_live_job(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    """Two scheduler replicas; one is cut off from NATS for three leases while the other
    answers the agent's reports. Healed, the first must not take back the job that its own
    view (no renewal seen while it was away) says is silent: the job runs once."""
    lease = float(str(SETTINGS["job_lease_s"]))
    async with service_stack(tmp_path, SETTINGS, SERVICES, proxied=["scheduler-1"]) as stack:
        signals = tmp_path / "signals"
        signals.mkdir()
        src = tmp_path / "src"
        src.mkdir()
        (src / "job.py").write_text(HELD)
        await stack.agent("agent-1", slots=1)
        config = ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(signals)])
        run_id = await submit(stack.ws, "jobs", config)
        view = LogView(stack.store, stack.ws.name)
        await _until(view, run_id, lambda ev: any(isinstance(e, RunStarted) for e in ev))
        await _file(signals / "started-1")

        proxy = stack.proxies["scheduler-1"]
        proxy.cut()
        await _renewed_after(stack, run_id, time.time() + 3 * lease)
        reconnects = proxy.accepted
        proxy.heal()
        healed = time.time()
        async with asyncio.timeout(60):
            while proxy.accepted == reconnects:
                await asyncio.sleep(0.1)
        replica = next(s for s in stack.procs.spawned if s.name == "scheduler-1")
        await stack.procs.wait_serving(stack.conn, [replica], timeout=60)
        await _renewed_after(stack, run_id, healed + 3 * lease)  # its passes since the heal

        (signals / "release").write_text("")
        events = await _until(view, run_id, lambda ev: any(isinstance(e, END) for e in ev))
        assert not [e for e in events if isinstance(e, RunRequeued)], events
        assert [e.attempt for e in events if isinstance(e, RunAssigned)] == [1]
        ends = [e for e in events if isinstance(e, END)]
        assert len(ends) == 1 and isinstance(ends[0], RunCompleted), ends
        assert not (signals / "started-2").exists(), "the job ran twice"
