"""``cairn cluster init`` writes a cluster's configs and credentials (refusing an even count),
and ``cairn cluster migrate`` gives a running cluster's streams their replicas as the admin."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cairn.bus import connect, provision
from cairn.cli import cli
from cairn.embedded import NatsCluster
from cairn.embedded._auth import SERVICE_USER
from cairn.errors import CairnError, InvalidInput
from cairn.settings import load_settings
from tests.conftest import own_server


def test_init_refuses_an_even_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "init", "--nodes", "2", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "odd number of nodes" in result.output and "survive no more" in result.output
    assert not any(tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["cluster", "init", "--nodes", "0", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "at least 1 node" in result.output


def test_init_writes_every_node_and_reuses_its_credentials(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    args = ["cluster", "init", "--dir", str(folder), "--base-port", "14222", "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    urls = [f"nats://127.0.0.1:{14222 + i}" for i in range(3)]
    assert data["nats_url"] == ",".join(urls)
    assert [n["url"] for n in data["nodes"]] == urls
    creds = (folder / "credentials.json").read_text()
    admin = (folder / "admin.json").read_text()
    for i, node in enumerate(data["nodes"]):
        conf = Path(node["config"]).read_text()
        assert f"server_name: n{i + 1}" in conf and f"listen: 127.0.0.1:{14222 + i}" in conf
        assert "sync_interval: always" in conf and "max_payload: 8MB" in conf
        assert f"listen: 127.0.0.1:{16222 + i}" in conf  # the routes
        others = {16222 + j for j in range(3)} - {16222 + i}
        assert all(f"@127.0.0.1:{port}" in conf for port in others)
        assert f"http: 127.0.0.1:{18222 + i}" in conf
        accounts = (folder / f"n{i + 1}" / "accounts.conf").read_text()
        assert "cairn-admin" in accounts and "jetstream: enabled" in accounts
        assert oct(os.stat(node["config"]).st_mode & 0o777) == "0o600"
    client = json.loads((folder / "config.json").read_text())
    assert client["nats_url"] == data["nats_url"]

    again = CliRunner().invoke(cli, [*args[:-1], "--host", "10.0.0.9"])
    assert again.exit_code == 0, again.output
    assert "nats-server -c" in again.output and "cairn cluster migrate" in again.output
    assert (folder / "credentials.json").read_text() == creds
    assert (folder / "admin.json").read_text() == admin
    assert "listen: 10.0.0.9:14222" in (folder / "n1" / "nats.conf").read_text()


async def test_migrate_command_scales_the_streams_as_the_admin(cluster: NatsCluster) -> None:
    conn = await connect(cluster.settings(user=SERVICE_USER))
    try:
        await provision(conn, replicas=1)
        await conn.js.publish("cairn.ev.ws1.experiment.e1", b"kept", stream="EVENTS")
    finally:
        await conn.close()
    (cluster.folder / "config.json").write_text(json.dumps(cluster.client_config()))
    env = {**os.environ, "CAIRN_HOME": str(cluster.folder)}
    cairn = str(Path(sys.executable).parent / "cairn")
    proc = await asyncio.create_subprocess_exec(
        cairn,
        "cluster",
        "migrate",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    streams = json.loads(out)["streams"]
    assert streams["EVENTS"] == {"before": 1, "after": 3}
    info = await cluster.stream_info("EVENTS")
    assert info["config"]["num_replicas"] == 3 and info["state"]["messages"] == 1


def test_one_node_is_a_plain_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cluster", "init", "--nodes", "1", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "n1" / "nats.conf").read_text()
    assert "cluster {" not in conf and "sync_interval: always" in conf
    assert json.loads((tmp_path / "config.json").read_text())["nats_url"] == "nats://127.0.0.1:4222"


async def test_a_single_node_provisions_single_copies(tmp_path: Path) -> None:
    async with NatsCluster(tmp_path / "one", nodes=1) as one:
        conn = await connect(one.settings(user=SERVICE_USER))
        try:
            await provision(conn)
        finally:
            await conn.close()
        assert (await one.stream_info("EVENTS"))["config"]["num_replicas"] == 1


def test_init_with_certificates_requires_tls(tmp_path: Path) -> None:
    tls, folder = tmp_path / "tls", tmp_path / "c"
    tls.mkdir()
    args = ["cluster", "init", "--dir", str(folder), "--tls", str(tls), "--json"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "cairn cluster certs" in refused.output
    made = CliRunner().invoke(cli, ["cluster", "certs", "--dir", str(tls), "--host", "127.0.0.1"])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert all(n["url"].startswith("tls://127.0.0.1:") for n in data["nodes"])
    conf = (folder / "n1" / "nats.conf").read_text()
    assert conf.count("tls {") == 2 and "verify: true" in conf  # clients, and routes (mutual)
    assert json.loads((folder / "config.json").read_text())["tls_ca"] == str(
        tls.resolve() / "ca.pem"
    )


async def test_init_refuses_a_nodes_store_holding_a_single_servers_streams(
    tmp_path: Path,
) -> None:
    """A single server's store copied under a node would not come into the cluster: init
    refuses it by name before writing any node's config."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    await conn.close()
    server.stop()
    folder = tmp_path / "c"
    shutil.copytree(server.dir / "store", folder / "n2" / "store")
    result = CliRunner().invoke(cli, ["cluster", "init", "--dir", str(folder)])
    assert isinstance(result.exception, CairnError), result.output
    assert "holds the streams of a single server" in result.exception.message
    assert "n2" in result.exception.message and "EVENTS" in result.exception.message
    assert not (folder / "n1" / "nats.conf").exists()


def test_init_writes_the_clusters_replicas_into_the_settings(tmp_path: Path) -> None:
    """config.json (what CAIRN_HOME=<dir> clients and services read) says how many copies
    streams keep, so nothing has to guess it from the server."""
    for nodes, replicas in ((3, 3), (1, 1)):
        folder = tmp_path / f"c{nodes}"
        args = ["cluster", "init", "--nodes", str(nodes), "--dir", str(folder)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert json.loads((folder / "config.json").read_text())["stream_replicas"] == replicas
        loaded = load_settings(env={"CAIRN_HOME": str(folder)})
        assert loaded.stream_replicas == replicas
    assert load_settings(env={"CAIRN_STREAM_REPLICAS": "5"}).stream_replicas == 5
    with pytest.raises(InvalidInput, match="stream_replicas"):
        load_settings(env={"CAIRN_STREAM_REPLICAS": "0"})
