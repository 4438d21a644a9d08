"""Moving R1 streams onto a cluster: provisioning refuses them by name, the admin's migration
gives each its replicas, and every message survives the loss of the node that held the only
copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from cairn.backup import backup, restore
from cairn.bus import (
    Connection,
    connect,
    ensure_consumer,
    ensure_stream,
    migrate_replicas,
    provision,
)
from cairn.bus._provision import stream_names
from cairn.embedded import NatsCluster
from cairn.embedded._auth import ADMIN_USER, SERVICE_USER
from cairn.errors import CairnError, PermissionDenied, UnderReplicated
from cairn.proto.streams import EVENTS, KV_BUCKETS, ConsumerConfig
from tests.conftest import own_server

#: a durable consumer on EVENTS, as the projections keep theirs
PROBE = ConsumerConfig(
    durable_name="migrate-probe",
    filter_subject="cairn.ev.>",
    ack_policy="explicit",
    ack_wait=30 * 10**9,
    max_deliver=-1,
    backoff=(),
    max_ack_pending=100,
    max_waiting=16,
    deliver_policy="all",
)

#: a few messages on each stream that keeps them (JOBS too: no consumer takes its tickets)
SUBJECTS = {
    "EVENTS": "cairn.ev.ws1.experiment.e{}",
    "METRICS": "cairn.metrics.ws1.r{}",
    "LOGS": "cairn.logs.ws1.r{}",
    "JOBS": "cairn.jobs.ws1.cpu",
}


async def _fill(conn: Connection, count: int) -> dict[str, list[bytes]]:
    sent: dict[str, list[bytes]] = {}
    for stream, subject in SUBJECTS.items():
        for i in range(count):
            data = f"{stream} message {i}".encode()
            ack = await conn.js.publish(subject.format(i % 3), data, stream=stream)
            assert ack.seq == i + 1
            sent.setdefault(stream, []).append(data)
    return sent


async def _read_all(conn: Connection, stream: str, count: int) -> list[bytes]:
    return [(await conn.js.get_msg(stream, seq)).data or b"" for seq in range(1, count + 1)]


async def test_r1_streams_are_refused_then_migrated_with_every_message(
    cluster: NatsCluster,
) -> None:
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=5.0))
    admin = await connect(cluster.settings(user=ADMIN_USER, request_timeout=5.0))
    try:
        await provision(conn, replicas=1)  # what a single-node home's streams are
        await ensure_consumer(conn, EVENTS.name, PROBE)
        sent = await _fill(conn, 20)
        holder = {name: await cluster.stream_leader(name) for name in SUBJECTS}

        with pytest.raises(UnderReplicated) as refused:
            await provision(conn)
        for name in stream_names():
            assert f"{name} (1)" in refused.value.message
        assert "cairn cluster migrate" in refused.value.message
        assert "the stream_replicas setting asks for 3" in refused.value.message
        with pytest.raises(UnderReplicated, match="3 replicas per stream were asked for"):
            await provision(conn, replicas=3)

        moved = await migrate_replicas(admin, timeout=45.0)
        assert moved == dict.fromkeys(stream_names(), (1, 3))
        assert await migrate_replicas(admin) == dict.fromkeys(stream_names(), (3, 3))
        probe = await admin.js.consumer_info(EVENTS.name, PROBE.durable_name)
        assert probe.cluster is not None and len(probe.cluster.replicas or []) == 2
        assert all(r.current for r in probe.cluster.replicas or [])  # migrate waited for it
        done = await provision(conn)  # the services start again
        assert done["EVENTS"] == "unchanged"
        for name in stream_names():
            info = await cluster.stream_info(name)
            assert info["config"]["num_replicas"] == 3, name
            assert all(r["current"] for r in info["cluster"]["replicas"]), name
        # services set up for fewer copies start on the migrated store, buckets too, and
        # nothing is scaled down (not even by the admin's contract-replicas ensure_stream)
        fewer = await provision(conn, replicas=1)
        assert set(fewer.values()) == {"unchanged"}, fewer
        assert {b.bucket for b in KV_BUCKETS} <= set(fewer)
        assert await ensure_stream(admin, EVENTS) == "unchanged"
        assert (await cluster.stream_info("EVENTS"))["config"]["num_replicas"] == 3
    finally:
        await conn.close()
        await admin.close()

    cluster.node(holder["EVENTS"].name).kill()  # the node that held EVENTS' only copy
    await cluster.wait_ready(timeout=30.0)
    survivor = await connect(cluster.settings(user=SERVICE_USER, request_timeout=5.0))
    try:
        for name in SUBJECTS:
            await cluster.stream_leader(name, timeout=30.0)  # a new one where it was killed
            assert await _read_all(survivor, name, 20) == sent[name], name
    finally:
        await survivor.close()


async def test_a_single_servers_store_is_refused_as_a_nodes_store(tmp_path: Path) -> None:
    """A cluster node does not bring a single server's streams into the cluster, which would
    look empty (and be provisioned anew over the history): such a store is refused by name."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    try:
        await conn.js.publish("cairn.ev.ws1.experiment.e1", b"history", stream="EVENTS")
    finally:
        await conn.close()
        server.stop()
    cluster = NatsCluster(tmp_path / "cluster", nodes=3)
    shutil.copytree(server.dir / "store", cluster.nodes[0].store)
    try:
        with pytest.raises(CairnError, match="holds the streams of a single server") as refused:
            await cluster.start()
        assert (
            "EVENTS" in refused.value.message and "cairn cluster migrate" in refused.value.message
        )
        assert not any(node.running for node in cluster.nodes)
    finally:
        cluster.kill()


async def test_only_the_admin_may_migrate(cluster: NatsCluster) -> None:
    """Scaling a stream is reconfiguring it: the services' user is refused by the server."""
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=2.0))
    try:
        await provision(conn, replicas=1)
        with pytest.raises(PermissionDenied, match=r"cairn-service may not publish to \$JS"):
            await migrate_replicas(conn, replicas=3)
    finally:
        await conn.close()
    assert (await cluster.stream_info("EVENTS"))["config"]["num_replicas"] == 1


async def test_a_restore_onto_a_cluster_gets_the_clusters_replicas(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """A single server's backup restored without ``replicas`` gets the cluster's (3), so the
    services start on it without a migration."""
    folder = tmp_path / "backup"
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    try:
        await conn.js.publish("cairn.ev.ws1.experiment.e1", b"history", stream="EVENTS")
        single = msgspec.structs.replace(
            settings, nats_user=ADMIN_USER, nats_password=server.admin_password
        )
        admin = await connect(single)
        try:
            await backup(admin, folder, single)
        finally:
            await admin.close()
    finally:
        await conn.close()
        server.stop()
    admin = await connect(cluster.settings(user=ADMIN_USER, request_timeout=10.0))
    try:
        await restore(admin, folder, cluster.settings(user=ADMIN_USER))
    finally:
        await admin.close()
    info = await cluster.stream_info("EVENTS")
    assert info["config"]["num_replicas"] == 3 and info["state"]["messages"] == 1
