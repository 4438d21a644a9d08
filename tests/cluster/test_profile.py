"""The cluster profile: three real nats-servers routed as one JetStream cluster, R3 streams."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cairn.bus import connect, provision
from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER
from cairn.errors import CairnError
from cairn.proto.streams import KV_BUCKETS, STREAMS
from cairn.tls import make_certs
from tests.cluster.conftest import MakeCluster


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


async def test_a_cluster_over_tls(make_cluster: MakeCluster, tmp_path: Path) -> None:
    """With certificates (``cairn cluster certs``), clients must speak TLS and verify the
    nodes against the CA, and routes use mutual TLS: R3 streams work over it."""
    certs = make_certs(tmp_path / "tls", hosts=("127.0.0.1",))
    nodes = await make_cluster(nodes=3, tls=certs)
    assert all(url.startswith("tls://") for url in nodes.urls)
    assert nodes.client_config()["tls_ca"] == str(certs.ca)
    conn = await connect(nodes.settings(user=SERVICE_USER))
    try:
        await provision(conn)
    finally:
        await conn.close()
    info = await nodes.wait_current("EVENTS")
    assert info["config"]["num_replicas"] == 3
    plain = msgspec.structs.replace(nodes.settings(), tls_ca=None, connect_timeout_s=2.0)
    with pytest.raises(CairnError):  # the nodes' CA is not among the system's
        await connect(plain)
