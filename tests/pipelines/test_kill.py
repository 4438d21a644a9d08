"""An orchestrator SIGKILLed at random points, across many pipeline runs, then started again:
every step ran exactly once and every pipeline completed. The orchestrator runs alone as
``cairn serve pipelines`` on a server of the test's own (the other services and two agents in
this process), so nothing but the restarted process can carry the pipelines on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection, EventStore, connect
from cairn.embedded._up import all_services
from cairn.proto import subjects
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import RunAssigned, RunStarted, RunSubmitted
from cairn.proto.pipelines import SubmitPipeline
from cairn.rpc import Client, ping_all
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.services.pipelines._service import PipelinesService
from tests.conftest import JOB_SETTINGS, Agents, own_server, settings_for
from tests.pipelines.helpers import submit, wait_pipeline, write_pipeline
from tests.test_cli import CAIRN

RUNS = 20

SIX = """\
type: pipeline
experiment_name: survive
settings:
  default_compute: local
  force_rerun: true
jobs:
  a:
    command: echo a > ${{outputs.out}}/a
    outputs: {out: {}}
  b:
    command: cat ${{inputs.x}}/a > ${{outputs.out}}/b
    inputs: {x: '${{parent.jobs.a.outputs.out}}'}
    outputs: {out: {}}
  c:
    command: cat ${{inputs.x}}/a > ${{outputs.out}}/c
    inputs: {x: '${{parent.jobs.a.outputs.out}}'}
    outputs: {out: {}}
  d:
    command: cat ${{inputs.b}}/b ${{inputs.c}}/c > ${{outputs.out}}/d
    inputs:
      b: '${{parent.jobs.b.outputs.out}}'
      c: '${{parent.jobs.c.outputs.out}}'
    outputs: {out: {}}
  e:
    command: cat ${{inputs.d}}/d
    inputs: {d: '${{parent.jobs.d.outputs.out}}'}
  f:
    command: echo f
    depends_on: [a]
"""


async def _orchestrator(env: dict[str, str], url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CAIRN,
        "serve",
        "pipelines",
        "--nats-url",
        url,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _until_serving(conn: Connection) -> None:
    async with asyncio.timeout(30):
        while not any(p.get("service") == "pipelines" for p in await ping_all(conn)):
            await asyncio.sleep(0.2)


async def _running(ws: AsyncWorkspace, sent: list[SubmitPipeline]) -> int:
    """How many of the pipeline runs have not ended (as the tracking service has them)."""
    statuses = [(await ws.run(s.run_id).details())["status"] for s in sent]
    return sum(1 for status in statuses if status not in ("Completed", "Failed", "Canceled"))


async def test_a_killed_orchestrator_runs_every_step_once(tmp_path: Path) -> None:
    server, service_settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(
        service_settings,
        state_dir=str(tmp_path / "state"),
        artifacts_dir=str(tmp_path / "artifacts"),
        datastore_roots=str(tmp_path),
        **JOB_SETTINGS,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    others = [f for name, f in all_services().items() if name != "pipelines"]
    services = asyncio.create_task(run_services(settings, others, stop=stop, ready=ready))
    client_settings = settings_for(server, service=False, **JOB_SETTINGS)
    client_conn = await connect(client_settings)
    ws_name = "k" + uuid.uuid4().hex[:10]
    agent_settings = settings_for(
        server,
        service=False,
        agent=True,
        workspace=ws_name,
        state_dir=str(tmp_path / "agent"),
        **JOB_SETTINGS,
    )
    agents = Agents(agent_settings)
    env = {
        **os.environ,
        "CAIRN_HOME": str(server.home),
        "CAIRN_STATE_DIR": str(tmp_path / "orchestrator"),
        "CAIRN_NATS_USER": service_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": service_settings.nats_password or "",
    }
    proc = None
    ws = AsyncWorkspace(client_conn, ws_name, client_settings)
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await Client(client_conn, ws_name).send(
            CreateWorkspace(command_id=uuid.uuid4().hex, name=ws_name)
        )
        await agents.start(slots=3)
        await agents.start(slots=3)
        proc = await _orchestrator(env, server.url)
        await _until_serving(conn)
        first = await submit(ws, write_pipeline(tmp_path / "p", SIX))
        sent = [first]
        for _ in range(RUNS - 1):  # the same stored submission, sent again as a new run
            again = msgspec.structs.replace(
                first, command_id=uuid.uuid4().hex, run_id=uuid.uuid4().hex[:20]
            )
            await ws.send(again)
            sent.append(again)
        kills = 0  # those that hit the orchestrator while pipelines were running
        started = time.monotonic()
        while time.monotonic() - started < 30:
            # the first kills come soon after a start (the pipelines are surely running then),
            # the later ones at any point of a pass
            await asyncio.sleep(random.uniform(0.2, 0.6) if kills < 3 else random.uniform(0.2, 2.5))
            running = await _running(ws, sent)
            proc.kill()
            await proc.wait()
            kills += 1 if running else 0
            proc = await _orchestrator(env, server.url)
            if not running:
                break
        await _until_serving(conn)
        done = [await wait_pipeline(ws, s.run_id, timeout=90) for s in sent]
        assert kills >= 3
        assert [d["status"] for d in done] == ["Completed"] * RUNS
        store = EventStore(conn)
        for pipeline in done:
            children = [r async for r in ws.iter_runs(parent_run_id=pipeline["run_id"])]
            assert len(children) == 6
            for child in children:
                history = await store.read(subjects.event(ws_name, "run", child["run_id"]))
                kinds = [type(r.envelope.data) for r in history]
                ran = [kinds.count(k) for k in (RunSubmitted, RunAssigned, RunStarted)]
                assert ran == [1, 1, 1], (child["run_id"], kinds)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await agents.close()
        stop.set()
        await services
        await ws.close()
        await client_conn.close()
        await conn.close()
        with contextlib.suppress(Exception):
            server.stop()


async def test_passes_over_one_pipeline_take_turns_and_leave_no_lock_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passes over one pipeline (the loop's, a submission's kick) run one at a time, a pass
    waiting for its turn keeps the lock alive, and the last one out drops it: no pruning that
    could hand a newcomer a second lock while a waiter holds the first."""
    service = object.__new__(PipelinesService)
    service._locks = {}
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def one_pass(ws: str, pid: str) -> None:
        inside.append(pid)
        if inside.count(pid) > 1:
            overlaps.append(tuple(inside))
        await asyncio.sleep(random.uniform(0, 0.005))
        inside.remove(pid)

    monkeypatch.setattr(service, "_reconcile_pipeline", one_pass)
    passes = [service.reconcile_pipeline("ws", f"p{i % 3}") for i in range(60)]
    first = asyncio.gather(*passes[:30])
    await asyncio.sleep(0)
    assert {k: n for k, (_, n) in service._locks.items()} == {  # waiters included
        ("ws", "p0"): 10,
        ("ws", "p1"): 10,
        ("ws", "p2"): 10,
    }
    await asyncio.gather(first, *passes[30:])
    assert not overlaps and not inside
    assert service._locks == {}
