"""An agent started before any service has provisioned the streams waits for them (logged
once), stops cleanly while it waits, and starts once they exist."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from cairn.bus import provision
from cairn.service import run_services
from cairn.services.agent import AgentService, list_agents
from tests.conftest import JOB_SETTINGS, own_server, settings_for


async def _until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == name]


async def test_an_agent_waits_for_the_streams_then_starts(tmp_path: Path) -> None:
    server, _, conn = await own_server(tmp_path / "home", request_timeout=5.0, provisioned=False)
    agent = settings_for(
        server,
        service=False,
        agent=True,
        workspace="w1",
        state_dir=str(tmp_path / "agent"),
        **JOB_SETTINGS,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    factory = partial(AgentService, compute="local", slots=1)
    task = None
    try:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(
                run_services(agent, [factory], stop=stop, ready=ready, provision_streams=False)
            )
            await _until(lambda: bool(_events(logs, "streams_missing_waiting")))
            assert not task.done() and not ready.is_set()
            await provision(conn)
            await asyncio.wait_for(ready.wait(), 60)
        waiting = _events(logs, "streams_missing_waiting")
        assert len(waiting) == 1
        assert set(waiting[0]["missing"]) == {"JOBS", "KV_cairn_agents"}
        assert len(_events(logs, "streams_found")) == 1
        assert [a.compute for a in await list_agents(conn)] == ["local"]
    finally:
        stop.set()
        try:
            if task is not None:
                await task
        finally:
            await conn.close()
            server.stop()


async def test_an_agent_waiting_for_the_streams_stops_when_asked(tmp_path: Path) -> None:
    server, _, conn = await own_server(tmp_path / "home", request_timeout=5.0, provisioned=False)
    agent = settings_for(
        server, service=False, agent=True, workspace="w1", state_dir=str(tmp_path / "agent")
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    factory = partial(AgentService, compute="local", slots=1)
    try:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(
                run_services(agent, [factory], stop=stop, ready=ready, provision_streams=False)
            )
            await _until(lambda: bool(_events(logs, "streams_missing_waiting")))
            stop.set()
            await asyncio.wait_for(task, 30)  # returns: no error, nothing started
        assert not ready.is_set()
        assert not _events(logs, "services_started")
    finally:
        await conn.close()
        server.stop()
