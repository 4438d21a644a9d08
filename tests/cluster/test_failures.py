"""``cairn.bus.transient`` over what a cluster without a quorum answers an append (its stream
leader cut off from both followers): no answer, or "no response from stream" once the leader
stepped down; both may pass."""

from __future__ import annotations

import nats.errors

from cairn.bus import connect, provision, transient
from cairn.embedded._auth import SERVICE_USER
from cairn.proto.streams import EVENTS
from tests.cluster.conftest import MakeCluster


async def test_what_a_cluster_without_a_quorum_answers_may_pass(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(nodes=3)
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=1.0))
    await provision(conn)
    await conn.close()
    up = await cluster.stream_leader(EVENTS.name)
    hung = [n for n in cluster.nodes if n is not up]
    conn = await connect(cluster.settings(user=SERVICE_USER, nodes=[up], request_timeout=1.0))
    try:
        for node in hung:
            node.pause()
        seen: list[Exception] = []
        for _ in range(40):  # until it stepped down (seconds), then once more
            try:
                await conn.js.publish("cairn.ev.w.experiment.e", b"{}", timeout=1.0)
            except (nats.errors.Error, TimeoutError) as exc:
                seen.append(exc)
            if len(seen) > 1 and not isinstance(seen[-2], TimeoutError):
                break
        assert seen and all(transient(e) for e in seen), seen
        assert any(not isinstance(e, TimeoutError) for e in seen), seen
    finally:
        for node in hung:
            if node.paused:
                node.resume()
        await conn.close()
