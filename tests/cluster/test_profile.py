"""The cluster profile: three real nats-servers routed as one JetStream cluster, R3 streams."""

from __future__ import annotations

from cairn.bus import connect, provision
from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER
from cairn.proto.streams import KV_BUCKETS, STREAMS


async def test_three_nodes_provision_r3_streams(cluster: NatsCluster) -> None:
    conn = await connect(cluster.settings(user=SERVICE_USER))
    try:
        done = await provision(conn)
        assert {d.name for d in STREAMS} <= set(done)
    finally:
        await conn.close()
    for name in [s.name for s in STREAMS] + [f"KV_{b.bucket}" for b in KV_BUCKETS]:
        info = await cluster.stream_info(name)
        assert info["config"]["num_replicas"] == 3, name
        peers = {info["cluster"]["leader"], *(r["name"] for r in info["cluster"]["replicas"])}
        assert peers == {n.name for n in cluster.nodes}, name
    leader = await cluster.stream_leader("EVENTS")
    assert leader in cluster.nodes
    assert cluster.meta_leader() in cluster.nodes
