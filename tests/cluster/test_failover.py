"""Clients and services are given every node's URL: when the node a client is connected to is
killed, or hangs (paused: its sockets stay open), its next command succeeds through another
node. The services are pinned to the client's node (given its URL alone; they learn the
others from it), so the fault takes them away too and the command proves they failed over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from cairn.embedded import ClusterNode, NatsCluster
from cairn.embedded._auth import SERVICE_USER
from cairn.embedded._cluster import ROUTE_PING_INTERVAL_S, ROUTE_PING_MAX
from cairn.embedded._up import all_services
from cairn.sdk import connect
from cairn.service import run_services

Services = Callable[[ClusterNode], AbstractAsyncContextManager[None]]


@pytest.fixture
def services(cluster: NatsCluster, tmp_path: Path) -> Services:
    """Every service in this process, as the services' user, connected first to ``node``."""

    @asynccontextmanager
    async def start(node: ClusterNode) -> AsyncIterator[None]:
        service = cluster.settings(
            user=SERVICE_USER,
            nodes=[node],
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

    return start


def _service_connections(cluster: NatsCluster) -> dict[str, int]:
    """Per live node, the connections of the services' user it holds."""
    held = {}
    for node in cluster.live():
        connections = node.monitor("/connz?auth=true&limit=1024").get("connections") or []
        count = sum(c.get("authorized_user") == SERVICE_USER for c in connections)
        if count:
            held[node.name] = count
    return held


async def _all_moved(cluster: NatsCluster, count: int, timeout: float = 60.0) -> dict[str, int]:
    """Until the live nodes hold ``count`` connections of the services' user (each service
    reconnected elsewhere); what they hold then, or after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = await asyncio.to_thread(_service_connections, cluster)
        if sum(held.values()) >= count or asyncio.get_running_loop().time() > deadline:
            return held
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_the_next_command_succeeds_through_another_node(
    cluster: NatsCluster, services: Services, fault: str
) -> None:
    settings = cluster.settings(workspace="failover", request_timeout=30.0)
    async with connect(settings) as ws:
        node = cluster.connected_node(ws.conn.nc)
        async with services(node):
            pinned = _service_connections(cluster)
            assert list(pinned) == [node.name]
            await ws.create()
            exp = await ws.experiment("failover")
            before = await exp.start_run(display_name="before")
            await before.complete()
            if fault == "kill":
                node.kill()
            else:
                node.pause()

            after = await exp.start_run(display_name="after")  # through another node
            assert cluster.connected_node(ws.conn.nc) is not node
            moved = await _all_moved(cluster, pinned[node.name])
            assert sum(moved.values()) == pinned[node.name]  # the services failed over too
            await after.complete()
            assert await after.get_status() == "Completed"
            names = sorted(r["display_name"] for r in await exp.runs())
            assert names == ["after", "before"]
            if fault == "pause":  # its peers closed their routes to it: no request waits on it
                await _routes_dropped(cluster, node)
            node.resume()


async def _routes_dropped(cluster: NatsCluster, hung: ClusterNode) -> None:
    """Every other node has closed its route to ``hung`` (its pings unanswered), within the
    time the generated configuration allows and some slack."""
    others = [n for n in cluster.nodes if n is not hung]
    deadline = time.monotonic() + 3 * ROUTE_PING_INTERVAL_S * (ROUTE_PING_MAX + 1)
    while True:
        routes = [await asyncio.to_thread(n.monitor, "/routez") for n in others]
        left = [r["remote_name"] for z in routes for r in z.get("routes") or []]
        if hung.name not in left:
            return
        assert time.monotonic() < deadline, f"routes to the hung node still open: {left}"
        await asyncio.sleep(1.0)
