"""Interactive runs whose process is gone are failed as lost; live and ended ones never are.

Each test has a NATS server of its own and two replicas of the tracking service (and the
ingester) with a short
heartbeat (every ``BEAT_S``; a run is lost after three missed beats), and runs
``start_logging`` in a real process that it kills or lets finish.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.bus import Connection, EventStore, connect
from cairn.embedded import NatsServer
from cairn.embedded._up import all_services
from cairn.errors import InvalidTransition
from cairn.proto import subjects
from cairn.proto.commands import CompleteRun, CreateWorkspace, HeartbeatRun
from cairn.proto.events import RunFailed
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, new_id
from cairn.service import run_services
from cairn.services.tracking._liveness import lost_reason
from tests.conftest import LEAKS_SOCKETS, settings_for
from tests.sdk.test_sync_sdk import sdk_env

SCRIPT = str(Path(__file__).with_name("beating_script.py"))
BEAT_S = 0.4
LOST = lost_reason(3 * BEAT_S)
WS = "live1"


class Replicas:
    """A server and tracking replicas of the test's own, each replica stoppable."""

    def __init__(self, home: Path, beat_s: float = BEAT_S) -> None:
        self.home = home
        self.beat_s = beat_s
        self.server = NatsServer(home / "server", port=0)
        self.stops: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.server.start()
        self.client_settings = settings_for(self.server, service=False, run_heartbeat_s=self.beat_s)
        await self.add()
        self.conn: Connection = await connect(self.client_settings)
        #: to read a run's events from the log itself
        self.service_conn = await connect(settings_for(self.server, service=True))
        self.client = Client(self.conn, WS)
        await self.client.send(CreateWorkspace(command_id="create-live1", name=WS))

    async def add(self) -> None:
        """One more tracking replica, with a read model of its own (rebuilt from the log)."""
        n = len(self.tasks)
        settings = settings_for(
            self.server,
            service=True,
            state_dir=str(self.home / f"state{n}"),
            run_heartbeat_s=self.beat_s,
        )
        stop, ready = asyncio.Event(), asyncio.Event()
        factories = [all_services()[name] for name in ("tracking", "ingester")]
        self.tasks.append(
            asyncio.create_task(run_services(settings, factories, stop=stop, ready=ready))
        )
        self.stops.append(stop)
        await asyncio.wait_for(ready.wait(), 15)

    async def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks)
        self.stops, self.tasks = [], []

    def env(self, home: Path) -> dict[str, str]:
        return {**sdk_env(self.client_settings, WS, home), "CAIRN_RUN_HEARTBEAT_S": str(BEAT_S)}

    async def close(self) -> None:
        await self.stop_all()
        await self.conn.close()
        await self.service_conn.close()
        self.server.stop()


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    made = Replicas(tmp_path / "stack")
    await made.start()
    await made.add()  # two replicas: both watch, both may decide
    yield made
    await made.close()


async def _spawn(replicas: Replicas, tmp_path: Path, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        *args,
        env=replicas.env(tmp_path / "script-home"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        raise AssertionError((await proc.communicate())[1].decode()[-3000:])
    return proc, json.loads(line)["run_id"]


async def _status(ws: AsyncWorkspace, run_id: str, wanted: str, within_s: float) -> dict[str, Any]:
    """The run's details once it has status ``wanted``; fails after ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        details = await ws.run(run_id).details()
        if details["status"] == wanted or loop.time() > deadline:
            assert details["status"] == wanted, details
            return details
        await asyncio.sleep(0.1)


async def _failures(conn: Connection, run_id: str) -> list[RunFailed]:
    history = await EventStore(conn).read(subjects.event(WS, "run", run_id))
    return [r.envelope.data for r in history if isinstance(r.envelope.data, RunFailed)]


async def test_a_killed_start_logging_run_is_failed_as_lost_once(
    replicas: Replicas, tmp_path: Path
) -> None:
    ws = AsyncWorkspace(replicas.conn, WS)
    proc, run_id = await _spawn(replicas, tmp_path, "wait")
    await _status(ws, run_id, "Running", 30)
    await asyncio.sleep(6 * BEAT_S)  # twice the bound: beating, so left alone
    assert await ws.run(run_id).get_status() == "Running"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # the bound is 3 beats (1.2 s); generous for a loaded machine, far below "for good"
    details = await _status(ws, run_id, "Failed", 20)
    assert details["error"] == LOST == "lost: no heartbeat for 1.2 s"
    await asyncio.sleep(6 * BEAT_S)  # both replicas had every chance to decide again
    assert [f.error for f in await _failures(replicas.service_conn, run_id)] == [LOST]


async def test_a_run_that_lives_and_completes_is_never_marked(
    replicas: Replicas, tmp_path: Path
) -> None:
    ws = AsyncWorkspace(replicas.conn, WS)
    proc, run_id = await _spawn(replicas, tmp_path, "live", str(10 * BEAT_S))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().splitlines()[-1]) == {"before": "Running", "after": "Completed"}
    await asyncio.sleep(6 * BEAT_S)  # long past its bound: an ended run is not watched
    assert await ws.run(run_id).get_status() == "Completed"
    assert await _failures(replicas.service_conn, run_id) == []


async def test_a_run_that_died_while_no_service_ran_is_failed_after_a_restart(
    replicas: Replicas, tmp_path: Path
) -> None:
    ws = AsyncWorkspace(replicas.conn, WS)
    proc, run_id = await _spawn(replicas, tmp_path, "wait")
    await _status(ws, run_id, "Running", 30)
    await replicas.stop_all()  # no tracking service at all
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await asyncio.sleep(6 * BEAT_S)
    await replicas.add()  # a fresh read model, rebuilt from the log; the beats from the bucket
    details = await _status(ws, run_id, "Failed", 20)
    assert details["error"] == LOST
    assert len(await _failures(replicas.service_conn, run_id)) == 1


async def test_an_async_run_beats_until_it_ends(replicas: Replicas) -> None:
    """The async core beats for the runs it starts; ended, they stop (and are never lost)."""
    conn = await connect(replicas.client_settings)
    ws = AsyncWorkspace(conn, WS, replicas.client_settings)
    try:
        exp = await ws.experiment("beating-async")
        alive = await exp.start_run()
        ended = await exp.start_run()
        await ended.complete()
        await asyncio.sleep(8 * BEAT_S)
        assert await alive.get_status() == "Running"
        assert await ended.get_status() == "Completed"
        await alive.stop_beating()  # as if its process had died (or lost the bus)
        details = await _status(ws, alive.id, "Failed", 20)
        assert details["error"] == LOST
        # back on the bus: its beats and its end are refused, naming why; its points are kept
        with pytest.raises(InvalidTransition, match="Failed: lost: no heartbeat"):
            for _ in range(50):  # whichever replica answers, once its read model has the end
                await ws.client.send(HeartbeatRun(command_id=new_id(), run_id=alive.id))
                await asyncio.sleep(0.1)
        alive.log("late", 7)
        await alive.flush()
        assert (await alive.get_metrics())["late"] == 7
        with pytest.raises(InvalidTransition):
            await ws.client.send(CompleteRun(command_id=new_id(), run_id=alive.id))
        assert await alive.get_status() == "Failed"
    finally:
        await ws.close()
        await conn.close()


@LEAKS_SOCKETS
async def test_a_live_run_outlives_an_outage_of_the_bus(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    """The bus away for everyone, longer than the bound: the tracking service starts its
    watch again once it is back, and the run, whose process beats again, is not failed."""
    stack = Replicas(tmp_path / "stack", beat_s=1.0)
    await stack.start()
    conn = await connect(stack.client_settings)
    ws = AsyncWorkspace(conn, WS, stack.client_settings)
    try:
        run = await (await ws.experiment("outage")).start_run()
        await asyncio.sleep(2)
        stack.server.stop()
        await asyncio.sleep(5)  # past the bound (3 s) with no beat anywhere
        stack.server = NatsServer(stack.server.home, port=stack.server.port)
        await stack.server.start()
        await asyncio.sleep(8)  # reconnected, beating again, watched again
        assert await run.get_status() == "Running"
        await run.complete()
        assert await run.get_status() == "Completed"
    finally:
        await ws.close()
        await conn.close()
        await stack.close()
