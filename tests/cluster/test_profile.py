"""The cluster profile: three real nats-servers routed as one JetStream cluster, R3 streams."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from cairn.bus import cluster_replicas, connect, provision
from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER, SYSTEM_USER
from cairn.embedded._server import find_nats_server, free_port
from cairn.errors import CairnError
from cairn.proto.streams import KV_BUCKETS, STREAMS
from cairn.settings import Settings
from cairn.tls import make_certs
from tests.cluster.conftest import MakeCluster


async def test_three_nodes_provision_r3_streams(cluster: NatsCluster) -> None:
    assert cluster.client_config()["stream_replicas"] == 3  # what config.json says
    conn = await connect(cluster.settings(user=SERVICE_USER, stream_replicas=None))
    try:
        assert cluster_replicas(conn) == 3  # without the setting: the server's peers say so
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


async def test_a_leaf_node_alone_keeps_single_copies(tmp_path: Path) -> None:
    """A single server with a leafnode remote names a cluster in its INFO (``"leaf"``) but
    has no peers: without the ``stream_replicas`` setting it provisions R1 streams."""
    hub_leafs = free_port()
    hub = _plain_server(
        tmp_path / "hub", free_port(), f"leafnodes {{ listen: 127.0.0.1:{hub_leafs} }}"
    )
    leaf_port = free_port()
    leaf = _plain_server(
        tmp_path / "leaf",
        leaf_port,
        f"server_name: leaf\njetstream {{ store_dir: {tmp_path / 'store'} }}\n"
        f'leafnodes {{ remotes: [{{url: "nats://127.0.0.1:{hub_leafs}"}}] }}',
    )
    try:
        await _ready(hub, tmp_path / "hub")
        await _ready(leaf, tmp_path / "leaf")
        settings = Settings(home=str(tmp_path), nats_url=f"nats://127.0.0.1:{leaf_port}")
        conn = await connect(settings)
        try:
            assert conn.nc._server_info.get("cluster") == "leaf"
            assert cluster_replicas(conn) == 1
            await provision(conn)
            info = await conn.js.stream_info("EVENTS")
            assert info.config.num_replicas == 1
        finally:
            await conn.close()
    finally:
        for proc in (leaf, hub):
            proc.terminate()
            proc.wait(10)


def _plain_server(folder: Path, port: int, config: str) -> subprocess.Popen[bytes]:
    """A nats-server of ``config`` alone (no accounts), on ``port``."""
    folder.mkdir()
    (folder / "nats.conf").write_text(f"listen: 127.0.0.1:{port}\n{config}\n")
    with open(folder / "server.log", "wb") as log:
        return subprocess.Popen(
            [find_nats_server(), "-c", str(folder / "nats.conf")], stdout=log, stderr=log
        )


async def _ready(proc: subprocess.Popen[bytes], folder: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while "Server is ready" not in (folder / "server.log").read_text(errors="replace"):
        assert proc.poll() is None, (folder / "server.log").read_text()
        assert time.monotonic() < deadline, "nats-server not ready"
        await asyncio.sleep(0.05)


async def test_the_system_user_reports_every_server(cluster: NatsCluster) -> None:
    """``admin.json`` keeps the system account's user, for ``nats server report`` and
    peer removal; no other file gives it, and the services' user cannot ask the servers."""
    kept = json.loads((cluster.folder / "admin.json").read_text())
    assert kept["system_user"] == SYSTEM_USER
    for other in ("credentials.json", "roles.json", "cluster.json"):
        assert kept["system_password"] not in (cluster.folder / other).read_text(), other
    assert kept["system_password"] not in json.dumps(cluster.client_config())
    system = await nats.connect(
        cluster.url.split(","), user=SYSTEM_USER, password=kept["system_password"]
    )
    try:
        inbox = system.new_inbox()
        answers: asyncio.Queue[dict[str, object]] = asyncio.Queue()

        async def take(msg: Msg) -> None:
            answers.put_nowait(json.loads(msg.data))

        await system.subscribe(inbox, cb=take)
        await system.publish("$SYS.REQ.SERVER.PING.JSZ", b"", reply=inbox)
        names = set()
        for _ in cluster.nodes:
            answer = await asyncio.wait_for(answers.get(), 10)
            server = answer.get("server")
            assert isinstance(server, dict)
            names.add(server["name"])
        assert names == {n.name for n in cluster.nodes}
    finally:
        await system.close()
    conn = await connect(cluster.settings(user=SERVICE_USER, request_timeout=2.0))
    try:
        with pytest.raises((TimeoutError, nats.errors.NoRespondersError)):
            await conn.nc.request("$SYS.REQ.SERVER.PING.JSZ", b"", timeout=2)
    finally:
        await conn.close()
