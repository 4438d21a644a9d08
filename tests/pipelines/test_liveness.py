"""A pipeline's own run is driven by the orchestrator, not by a process that beats: the
tracking service's liveness check leaves it alone, however long its steps take. The stack is
the test's own, with a heartbeat far shorter than the step."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import msgspec

from cairn.bus import connect
from cairn.embedded._up import all_services
from cairn.proto.commands import CreateWorkspace
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from tests.conftest import JOB_SETTINGS, Agents, own_server, settings_for
from tests.pipelines.helpers import submit, wait_pipeline, write_pipeline

#: a run without a controller is lost after three missed beats: 0.9 s
BEAT_S = 0.3

SLOW = """\
type: pipeline
experiment_name: slow
settings: {default_compute: local}
jobs:
  wait:
    command: sleep 4
"""


async def test_a_pipeline_run_outlives_the_liveness_check(tmp_path: Path) -> None:
    server, service_settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(
        service_settings,
        state_dir=str(tmp_path / "state"),
        artifacts_dir=str(tmp_path / "artifacts"),
        datastore_roots=str(tmp_path),
        run_heartbeat_s=BEAT_S,
        **JOB_SETTINGS,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    services = asyncio.create_task(
        run_services(settings, list(all_services().values()), stop=stop, ready=ready)
    )
    client_settings = settings_for(server, service=False, run_heartbeat_s=BEAT_S, **JOB_SETTINGS)
    client_conn = await connect(client_settings)
    ws_name = "l" + uuid.uuid4().hex[:10]
    agents = Agents(
        settings_for(
            server,
            service=False,
            agent=True,
            workspace=ws_name,
            state_dir=str(tmp_path / "agent"),
            **JOB_SETTINGS,
        )
    )
    ws = AsyncWorkspace(client_conn, ws_name, client_settings)
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await Client(client_conn, ws_name).send(
            CreateWorkspace(command_id=uuid.uuid4().hex, name=ws_name)
        )
        await agents.start()
        sent = await submit(ws, write_pipeline(tmp_path / "p", SLOW))
        done = await wait_pipeline(ws, sent.run_id, timeout=60)
        assert done["status"] == "Completed", done
        details = await ws.run(sent.run_id).details()
        assert details["status"] == "Completed", details
        assert details["controller"] == "pipeline"
    finally:
        await agents.close()
        stop.set()
        await services
        await ws.close()
        await client_conn.close()
        await conn.close()
        server.stop()
