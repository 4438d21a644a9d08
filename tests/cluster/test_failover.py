"""Clients and services are given every node's URL: when the node a client is connected to is
killed, or hangs (paused: its sockets stay open), its next command succeeds through another
node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER
from cairn.embedded._up import all_services
from cairn.sdk import connect
from cairn.service import run_services


@pytest.fixture
async def services(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[None]:
    """Every service in this process, connected as the services' user to every node."""
    service = cluster.settings(
        user=SERVICE_USER,
        state_dir=str(tmp_path / "state"),
        artifacts_dir=str(tmp_path / "artifacts"),
        request_timeout=10.0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    factories = list(all_services().values())
    task = asyncio.create_task(run_services(service, factories, stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_the_next_command_succeeds_through_another_node(
    cluster: NatsCluster, services: None, fault: str
) -> None:
    settings = cluster.settings(workspace="failover", request_timeout=20.0)
    async with connect(settings) as ws:
        await ws.create()
        exp = await ws.experiment("failover")
        before = await exp.start_run(display_name="before")
        await before.complete()
        node = cluster.connected_node(ws.conn.nc)
        if fault == "kill":
            node.kill()
        else:
            node.pause()

        after = await exp.start_run(display_name="after")  # through another node
        assert cluster.connected_node(ws.conn.nc) is not node
        await after.complete()
        assert await after.get_status() == "Completed"
        names = sorted(r["display_name"] for r in await exp.runs())
        assert names == ["after", "before"]
    node.resume()
