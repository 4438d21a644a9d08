"""A cluster's nodes are killed, restarted, paused and resumed one at a time, as the fault
suite does; streams keep a leader through each and every replica catches up."""

from __future__ import annotations

from cairn.bus import connect, provision
from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER


async def test_a_killed_leader_is_replaced_and_its_node_catches_up(cluster: NatsCluster) -> None:
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=5.0))
    try:
        await provision(conn)
        leader = await cluster.stream_leader("EVENTS")
        leader.kill()
        assert not leader.running and leader not in cluster.live()
        assert await cluster.stream_leader("EVENTS", timeout=30.0) is not leader
        for i in range(5):  # accepted by the two that are left
            await conn.js.publish(f"cairn.ev.ws1.experiment.e{i}", b"x", stream="EVENTS")
        await leader.start()
        await cluster.wait_ready()
        info = await cluster.wait_current("EVENTS")
        assert info["state"]["messages"] == 5
        assert {r["name"] for r in info["cluster"]["replicas"]} | {info["cluster"]["leader"]} == {
            n.name for n in cluster.nodes
        }
    finally:
        await conn.close()


async def test_a_paused_follower_is_left_out_until_it_resumes(cluster: NatsCluster) -> None:
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=5.0))
    try:
        await provision(conn)
        leaders = {await cluster.stream_leader("EVENTS"), cluster.meta_leader()}
    finally:
        await conn.close()
    node = next(n for n in cluster.nodes if n not in leaders)  # leads nothing
    node.pause()
    assert node.running and node.paused and node not in cluster.live()
    await cluster.wait_ready()  # the others: nothing to elect
    others = [n for n in cluster.nodes if n is not node]
    conn = await connect(cluster.settings(user=SERVICE_USER, nodes=others, request_timeout=5.0))
    try:
        for i in range(3):  # a quorum of two answers
            await conn.js.publish(f"cairn.ev.ws1.experiment.p{i}", b"x", stream="EVENTS")
    finally:
        await conn.close()
    node.resume()
    await cluster.wait_ready()
    assert node in cluster.live()
    await node.restart()
    await cluster.wait_ready()
    info = await cluster.wait_current("EVENTS")
    assert info["state"]["messages"] == 3
