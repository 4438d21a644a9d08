"""A projection whose shared feed the server cannot make now (an election, no quorum: err
10008 or a timeout) keeps running and asks again, instead of stopping the service it is part
of (seen under a paused stream leader: every projection of every service stopped)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import structlog

from cairn.bus import EventStore, connect, provision
from cairn.embedded._auth import SERVICE_USER
from cairn.projection import ProjectionRunner
from cairn.projection._engine import _hub_for
from cairn.services.tracking import TrackingProjection
from tests.cluster.conftest import MakeCluster
from tests.helpers import envelope


async def test_a_feed_refused_during_an_election_is_asked_for_again(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = await make_cluster(nodes=3)
    up, *hung = cluster.nodes
    conn = await connect(cluster.settings(user=SERVICE_USER, nodes=[up], request_timeout=1.0))
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await provision(conn)
        store = EventStore(conn)
        runner = ProjectionRunner(
            conn, tmp_path / "p.sqlite", TrackingProjection(), stall_s=1.0, poll_s=0.2
        )
        task = asyncio.create_task(runner.run(stop))
        await runner.wait_for(await store.last_seq(), timeout=60)
        hub = _hub_for(conn, runner.projection.source)
        for node in hung:
            node.pause()
        with structlog.testing.capture_logs() as logs:
            await hub.resubscribe()  # as the watchdog does: now without a quorum
        assert hub.sub is None and not task.done()
        assert any(e["event"] == "projection_feed_unavailable" for e in logs), logs
        for node in hung:
            node.resume()
        ws = f"w{uuid.uuid4().hex[:8]}"
        result = await store.append(
            f"cairn.ev.{ws}.experiment.e",
            [envelope(ws, "e")],
            expected_seq=0,
            msg_id=uuid.uuid4().hex,
        )
        assert await runner.wait_for(result.seq, timeout=60) >= result.seq
        assert hub.sub is not None and not task.done()
    finally:
        for node in hung:
            if node.paused:
                node.resume()
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)
        await conn.close()
