"""The distributed profile: ``cairn cluster init`` (a NATS JetStream cluster's configs and
credentials), ``cairn cluster migrate`` (streams scaled to the cluster's replicas) and
``cairn cluster certs`` (a CA, the server's and clients' TLS certificates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cairn.cli._base import cli, done, json_option, run, settings
from cairn.tls import DEFAULT_DAYS, DEFAULT_HOSTS, MAX_DAYS, CertFiles, make_certs

#: the highest port ``--base-port`` may make (its monitoring ports are base + 4000 + i)
_TOP_PORT = 65535


@cli.group()
def cluster() -> None:
    """The distributed profile: a NATS JetStream cluster that other machines reach.

    \b
    Example:
      cairn cluster init --nodes 3 --dir ./cluster
      cairn cluster certs --dir ./tls --host nats.example.org --client cairn-agent
    """


@cluster.command()
@click.option(
    "--nodes",
    type=int,
    default=3,
    show_default=True,
    help="how many nats-servers: an odd number (1, 3, 5); 3 keep every stream through the"
    " loss of one",
)
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder of the nodes' configs and stores and of the credentials (made 0700;"
    " credentials found there are reused)",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="the address clients and the other nodes reach a node by (it listens there): once"
    " for every node, or once per node in order (default: 127.0.0.1)",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, _TOP_PORT),
    default=4222,
    show_default=True,
    help="node i (from 0) takes this + i for clients, + 2000 + i for routes and + 4000 + i"
    " for monitoring (on 127.0.0.1)",
)
@click.option("--name", default="cairn", show_default=True, help="the cluster's name")
@click.option(
    "--tls",
    "tls_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="folder of cairn cluster certs (its server certificate naming every --host): clients"
    " must speak TLS and verify the nodes against its CA; routes use mutual TLS",
)
@json_option
def init(
    nodes: int,
    folder: Path,
    hosts: tuple[str, ...],
    base_port: int,
    name: str,
    tls_dir: Path | None,
    as_json: bool,
) -> None:
    """Write one nats-server config per node (JetStream with sync_interval: always, the
    routes to every other node with a password of their own, the accounts and users of
    Cairn's security model) and the credentials (credentials.json, admin.json, as
    cairn up makes them; reused when --dir has them; admin.json also holds the system
    account's user, cairn-system, for nats server commands), and config.json, the client
    and service settings over every node (stream_replicas: 3, or 1 for one node). Refuses a
    node whose store already holds a single server's streams. Safe to repeat. Prints how to
    start each node and what clients and services are given.

    \b
    Example:
      cairn cluster init --nodes 3 --dir ./cluster
      cairn cluster init --dir /srv/cairn --host 10.0.0.1 --host 10.0.0.2 --host 10.0.0.3
      cairn cluster init --dir /srv/cairn --tls ./tls --host nats1.example.org ...
    """
    from cairn.embedded._auth import SYSTEM_USER, write_private
    from cairn.embedded._cluster import MONITOR_OFFSET, NatsCluster, check_node_count
    from cairn.embedded._server import find_nats_server
    from cairn.errors import InvalidInput

    try:
        check_node_count(nodes)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="--nodes") from None
    if len(hosts) not in (0, 1, nodes):
        raise click.BadParameter(
            f"give it once (every node) or once per node ({nodes})", param_hint="--host"
        )
    if base_port + MONITOR_OFFSET + nodes - 1 > _TOP_PORT:
        top = _TOP_PORT - MONITOR_OFFSET - nodes + 1
        raise click.BadParameter(f"at most {top} for {nodes} nodes", param_hint="--base-port")
    tls = None
    if tls_dir is not None:
        tls = CertFiles(tls_dir.resolve())
        missing = [p for p in (tls.ca, tls.server_cert, tls.server_key) if not p.is_file()]
        if missing:
            raise click.BadParameter(
                f"{', '.join(map(str, missing))} missing: make them with cairn cluster certs"
                f" --dir {tls_dir} and a --host for every node",
                param_hint="--tls",
            )
    made = NatsCluster(
        folder.resolve(),
        nodes=nodes,
        hosts=hosts or ("127.0.0.1",),
        base_port=base_port,
        name=name,
        tls=tls,
    )
    for node in made.nodes:
        node.check_store()  # a single server's store copied in: refused before any config
    made.write()
    config = made.folder / "config.json"
    write_private(config, json.dumps(made.client_config(), indent=2) + "\n")
    server = find_nats_server()
    data: dict[str, Any] = {
        "nats_url": made.url,
        "home": str(made.folder),
        "nodes": [
            {
                "name": n.name,
                "url": n.url,
                "route": n.route_url,
                "monitor": f"http://127.0.0.1:{n.monitor_port}",
                "config": str(n.conf),
                "start": f"{server} -c {n.conf}",
            }
            for n in made.nodes
        ],
        "credentials": str(made.credentials_file),
        "admin": str(made.folder / "admin.json"),
        "system_user": SYSTEM_USER,
        "stream_replicas": made.replicas,
        "client_config": str(config),
        "tls_ca": str(tls.ca) if tls is not None else None,
    }
    home = f"CAIRN_HOME={made.folder}"
    done(
        as_json,
        data,
        *(f"wrote {n.conf} ({n.url}, routes :{n.route_port})" for n in made.nodes),
        f"credentials: {made.credentials_file}, {made.folder / 'admin.json'} (the admin's,"
        f" and {SYSTEM_USER}'s for nats server commands), {made.folder / 'cluster.json'}"
        " (the routes')",
        f"streams and buckets keep {made.replicas} replicas (stream_replicas in {config})",
        "",
        "start each node (on its machine; the folder at the same path there):",
        *(f"  {server} -c {n.conf}" for n in made.nodes),
        "",
        f"clients: nats_url={made.url}" + (f" tls_ca={tls.ca}" if tls is not None else ""),
        f"  {home} cairn status                 # {config} has the local person's settings",
        f"  {home} cairn serve tracking         # each service, as cairn-service",
        f"  {home} cairn cluster migrate        # once, for streams restored from one node",
    )


@cluster.command()
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=None,
    help="the replicas each stream gets (default: 3 on a cluster, 1 on a single server)",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1.0),
    default=300.0,
    show_default=True,
    help="seconds to wait for the new replicas to hold every message",
)
@json_option
def migrate(replicas: int | None, timeout: float, as_json: bool) -> None:
    """Give each of Cairn's streams and buckets the replicas the cluster warrants (a store
    restored from a single-node home has one), as the admin (admin.json of the home: only
    cairn-admin may reconfigure a stream), and wait until the new replicas are current.
    Streams that have enough are left as they are; safe to repeat.

    \b
    Example:
      CAIRN_HOME=./cluster cairn cluster migrate
    """
    from cairn.bus import connect, migrate_replicas
    from cairn.embedded._admin import admin_settings

    async def go() -> dict[str, tuple[int, int]]:
        conn = await connect(admin_settings(settings()), name="cairn-cluster-migrate")
        try:
            return await migrate_replicas(conn, replicas=replicas, timeout=timeout)
        finally:
            await conn.close()

    moved = run(go())
    lines = [
        f"{name}: {before} -> {after} replicas" if before != after else f"{name}: {after}"
        for name, (before, after) in moved.items()
    ]
    data = {name: {"before": b, "after": a} for name, (b, a) in moved.items()}
    done(as_json, {"streams": data}, *(lines or ["no stream of Cairn's exists yet"]))


@cluster.command()
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder of the CA and the certificates (made 0700; a CA found there is reused)",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="a name or IP address clients reach the server by, for its certificate; repeatable"
    f" (default: {' and '.join(DEFAULT_HOSTS)})",
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    help="make a client certificate with this name (CN), for mutual TLS, e.g. cairn-agent;"
    " repeatable",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DAYS),
    default=DEFAULT_DAYS,
    show_default=True,
    help=f"how long the server and client certificates are valid (at most {MAX_DAYS})",
)
@click.option(
    "--force",
    is_flag=True,
    help="replace a server or client certificate and key that exist (never the CA)",
)
@click.option(
    "--no-server",
    is_flag=True,
    help="make client certificates only, keeping the server's as it is",
)
def certs(
    folder: Path,
    hosts: tuple[str, ...],
    clients: tuple[str, ...],
    days: int,
    force: bool,
    no_server: bool,
) -> None:
    """Make a CA (ECDSA P-256, reused if --dir holds one), a certificate for nats-server whose
    names are the --host values, and a client certificate per --client name. Private keys
    are written 0600; existing certificates are kept unless --force. The server's tls block
    and the clients' settings (CAIRN_TLS_CA, CAIRN_TLS_CERT, CAIRN_TLS_KEY) are printed.

    \b
    Example:
      cairn cluster certs --dir ./tls --host nats.example.org --host 10.0.0.5 --client cairn-agent
    """
    from cairn.tls import server_tls_block

    made = make_certs(
        folder, hosts=hosts, clients=clients, days=days, force=force, server=not no_server
    )
    for path in made.reused[:1]:
        click.echo(f"reused the CA {path}")
    for path in made.made:
        click.echo(f"wrote {path}")
    if not no_server:
        click.echo("\nnats-server (verify: true requires a client certificate of every client):")
        tls = (made.server_cert.resolve(), made.server_key.resolve(), made.ca.resolve())
        for line in server_tls_block(*tls):
            click.echo(f"  {line}")
    click.echo("\nclients:")
    click.echo(f"  CAIRN_TLS_CA={made.ca.resolve()}")
    for name in clients:
        click.echo(
            f"  {name}: CAIRN_TLS_CERT={made.client_cert(name).resolve()}"
            f" CAIRN_TLS_KEY={made.client_key(name).resolve()}"
        )
