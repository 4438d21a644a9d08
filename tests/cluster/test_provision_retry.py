"""Provisioning against a cluster that cannot answer (no quorum: two of three nodes hang)
tries again, logged once, and completes once the cluster answers; stopped, it is
``Unavailable`` rather than a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from cairn.bus import Connection, connect, provision
from cairn.embedded import ClusterNode
from cairn.embedded._auth import SERVICE_USER
from cairn.errors import Unavailable
from cairn.proto.streams import KV_BUCKETS, STREAMS
from tests.cluster.conftest import MakeCluster


async def _until_logged(logs: list[dict[str, Any]], event: str, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not any(e.get("event") == event for e in logs):
            await asyncio.sleep(0.05)


@dataclass
class Quorumless:
    """A connection to the one node left answering of three; the other two are paused
    (resumed at the end whatever happened)."""

    conn: Connection
    hung: list[ClusterNode]
    stop: asyncio.Event


@pytest.fixture
async def quorumless(make_cluster: MakeCluster) -> AsyncIterator[Quorumless]:
    cluster = await make_cluster(nodes=3)
    up, *hung = cluster.nodes
    conn = await connect(cluster.settings(user=SERVICE_USER, nodes=[up], request_timeout=1.0))
    for node in hung:
        node.pause()
    stop = asyncio.Event()
    try:
        yield Quorumless(conn, hung, stop)
    finally:
        for node in hung:
            if node.paused:
                node.resume()
        stop.set()
        await conn.close()


async def test_provisioning_without_a_quorum_waits_for_it(quorumless: Quorumless) -> None:
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(provision(quorumless.conn, stop=quorumless.stop))
        await _until_logged(logs, "provision_retrying")
        assert not task.done()
        for node in quorumless.hung:
            node.resume()
        done = await asyncio.wait_for(task, 120)
    assert set(done) == {s.name for s in STREAMS} | {b.bucket for b in KV_BUCKETS}
    assert [e["event"] for e in logs].count("provision_retrying") == 1
    again = await provision(quorumless.conn)  # every stream there, with its three replicas
    assert {again[s.name] for s in STREAMS} == {"unchanged"}


async def test_provisioning_without_a_quorum_stops_when_asked(quorumless: Quorumless) -> None:
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(provision(quorumless.conn, stop=quorumless.stop))
        await _until_logged(logs, "provision_retrying")
        quorumless.stop.set()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(task, 30)
