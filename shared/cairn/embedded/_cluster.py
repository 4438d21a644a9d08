"""A NATS JetStream cluster of real nats-server processes: the distributed profile's servers.

``cairn cluster init`` writes the folder this class works over, and tests (the cluster
profile's, the fault suite's) start and break its nodes through it::

    <folder>/credentials.json, admin.json, roles.json   who may connect (as ``cairn up``;
                                                        admin.json also the system user's)
    <folder>/cluster.json                               the routes' own user and password
    <folder>/<node>/nats.conf, accounts.conf            one server's config (``server_config``)
    <folder>/<node>/store/                              its JetStream store
    <folder>/<node>/server.log, nats.pid

Every node is the embedded server's config (one writer, :func:`server_config`: JetStream with
``sync_interval: always``, the same ``max_payload``, the same accounts and users) plus a
``cluster { }`` block: the cluster's name, the node's route address, the routes to every
other node, and a user that routes must authenticate as (a server that does not know the
routes' password cannot join). Each node also serves the monitoring endpoints (``/healthz``,
``/jsz``) on loopback: :meth:`NatsCluster.wait_ready` reads the JetStream meta leader there.

A cluster has an odd number of nodes: JetStream's RAFT groups need a majority, and an even
count adds a node that can fail without adding a failure the cluster survives (two nodes
survive none). A single node is written without a cluster block: a plain server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus._provision import CLUSTER_REPLICAS
from cairn.embedded._auth import (
    ADMIN_USER,
    AGENT_USER,
    SERVICE_USER,
    Credentials,
    accounts_config,
    admin_password,
    system_password,
    write_private,
)
from cairn.embedded._node import ClusterNode
from cairn.embedded._server import free_port
from cairn.errors import CairnError, InvalidInput, Unavailable
from cairn.settings import Settings
from cairn.tls import CertFiles, server_tls_block

__all__ = ["ROUTE_USER", "ClusterNode", "NatsCluster", "check_node_count"]

#: the user routes between the nodes authenticate as (``cluster.json`` keeps its password)
ROUTE_USER = "cairn-route"
#: with ``base_port``: node ``i`` (from 0) serves clients on ``base + i``, routes on
#: ``base + ROUTE_OFFSET + i`` and monitoring on ``base + MONITOR_OFFSET + i``
#: (4222, 6222, 8222 for the first node by default, as nats-server's own defaults)
ROUTE_OFFSET = 2000
MONITOR_OFFSET = 4000
#: a route whose peer answers none of this many pings, one every this many seconds, is
#: closed (10 to 15 s), and its peer's subscriptions with it: the order of JetStream's own
#: leader election (4 to 9 s), where nats-server's defaults take up to six minutes
ROUTE_PING_INTERVAL_S = 5
ROUTE_PING_MAX = 2


def check_node_count(nodes: int) -> int:
    """1, 3, 5, ...: JetStream's RAFT needs a majority, which an even count does not make
    more likely (two nodes survive no failure at all, four survive one as three do)."""
    if nodes < 1:
        raise InvalidInput(f"a cluster needs at least 1 node, not {nodes}")
    if nodes % 2 == 0:
        raise InvalidInput(
            f"{nodes} nodes: a cluster has an odd number of nodes (1, 3, 5). JetStream keeps"
            f" a stream while a majority of its replicas is up; {nodes} nodes survive no more"
            f" failures than {nodes - 1}{' (none)' if nodes == 2 else ''}, and R3 streams need 3"
        )
    return nodes


class NatsCluster:
    """``nodes`` nats-servers over ``folder``, routed to each other as one JetStream cluster.

    ``base_port=0`` gives each node free ports (tests); otherwise node ``i`` (from 0) listens
    on ``base_port + i`` for clients, ``+ ROUTE_OFFSET`` for routes and ``+ MONITOR_OFFSET``
    for monitoring. ``hosts`` is one address for every node or one per node (what clients and
    the other nodes reach it by; the node listens there). The credentials of ``folder`` are
    reused when they exist (``credentials.json``, ``admin.json``, ``cluster.json``).
    """

    def __init__(
        self,
        folder: Path,
        *,
        nodes: int = 3,
        hosts: Sequence[str] = ("127.0.0.1",),
        base_port: int = 0,
        name: str = "cairn",
        tls: CertFiles | None = None,
    ) -> None:
        check_node_count(nodes)
        if len(hosts) not in (1, nodes):
            raise InvalidInput(f"give one host for every node or one per node ({nodes})")
        self.folder = folder
        self.name = name
        #: the CA and the nodes' certificate (``cairn cluster certs``, whose ``--host`` names
        #: every node): clients must speak TLS, routes mutual TLS
        self.tls = tls
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.credentials = Credentials.load_or_create(self.credentials_file)
        self.admin_password = admin_password(folder / "admin.json")
        #: the system account's user (``SYSTEM_USER``), for operators' ``nats server ...``
        self.system_password = system_password(folder / "admin.json")
        self.route_password = _route_password(folder / "cluster.json")
        write_private(
            folder / "roles.json", json.dumps(self.credentials.roles_file(), indent=2) + "\n"
        )
        self.nodes = [
            ClusterNode(
                self,
                f"n{i + 1}",
                host=hosts[i if len(hosts) > 1 else 0],
                port=base_port + i if base_port else free_port(),
                route_port=base_port + ROUTE_OFFSET + i if base_port else free_port(),
                monitor_port=base_port + MONITOR_OFFSET + i if base_port else free_port(),
            )
            for i in range(nodes)
        ]

    async def __aenter__(self) -> NatsCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    @property
    def credentials_file(self) -> Path:
        return self.folder / "credentials.json"

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order."""
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """The ``nats_url`` setting: every node's URL, comma-separated (clients fail over)."""
        return ",".join(self.urls)

    def node(self, key: str | int) -> ClusterNode:
        """A node by name (``n2``), server name, index (from 0) or client URL."""
        for i, node in enumerate(self.nodes):
            if key in (i, node.name, node.url):
                return node
        raise InvalidInput(f"no node {key!r} in this cluster ({', '.join(self.urls)})")

    def accounts_text(self) -> str:
        self.credentials = Credentials.load_or_create(self.credentials_file)
        lines = accounts_config(self.credentials, self.admin_password, self.system_password)
        return "\n".join(lines) + "\n"

    def cluster_block(self, node: ClusterNode) -> list[str] | None:
        """``node``'s ``cluster { }`` lines; None for a cluster of one (a plain server)."""
        if len(self.nodes) == 1:
            return None
        auth = f"{ROUTE_USER}:{self.route_password}"
        routes = [
            f"nats-route://{auth}@{other.host}:{other.route_port}"
            for other in self.nodes
            if other is not node
        ]
        return [
            "cluster {",
            f"  name: {self.name}",
            f"  listen: {node.host}:{node.route_port}",
            "  authorization {",
            f"    user: {ROUTE_USER}",
            f"    password: {json.dumps(self.route_password)}",
            "  }",
            f"  routes: {json.dumps(routes)}",
            # a node that hangs (paused, swapping) keeps its sockets open: only unanswered
            # pings tell its peers, which meanwhile route requests to the queue members
            # that were connected to it (nats-server's default: two minutes, twice)
            f'  ping_interval: "{ROUTE_PING_INTERVAL_S}s"',
            f"  ping_max: {ROUTE_PING_MAX}",
            *(f"  {line}" for line in self._route_tls()),
            "}",
        ]

    def _route_tls(self) -> list[str]:
        """Mutual TLS between routes (nats-server requires it of a cluster's ``tls``): each
        node presents the nodes' certificate and verifies its peer's against the CA."""
        if self.tls is None:
            return []
        tls = self.tls
        return server_tls_block(tls.server_cert, tls.server_key, tls.ca, verify=True)

    def write(self) -> None:
        """Every node's config (safe to repeat: the credentials are kept)."""
        for node in self.nodes:
            node.write()

    async def start(self, timeout: float = 30.0) -> None:
        """Start every node that is not running and wait until the cluster is ready."""
        for node in self.nodes:
            node.check_store()  # before any starts
        offsets = {node.name: node.spawn() for node in self.nodes}
        for node in self.nodes:
            await node.wait_listening(offsets[node.name], timeout)
        await self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node (gracefully, then SIGKILL); safe to repeat."""
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        """SIGKILL every node."""
        for node in self.nodes:
            node.kill()

    async def wait_ready(
        self, timeout: float = 30.0, nodes: Iterable[ClusterNode] | None = None
    ) -> None:
        """Until each of ``nodes`` (default: every running, unpaused node) answers
        ``/healthz`` ok (JetStream enabled, its meta group and its streams current) and
        names in ``/jsz`` a JetStream meta leader that is live (after a kill or a pause of
        the leader: until the others elected another); ``Unavailable`` after ``timeout``."""
        wanted = list(nodes) if nodes is not None else self.live()
        deadline = time.monotonic() + timeout
        while True:
            why = await asyncio.to_thread(self._not_ready, wanted)
            if why is None:
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"the cluster is not ready after {timeout}s: {why}")
            await asyncio.sleep(0.1)

    def _not_ready(self, nodes: list[ClusterNode]) -> str | None:
        for node in nodes:
            if not node.running:
                return f"{node.name} is not running"
            try:
                health = node.monitor("/healthz")
                meta = node.monitor("/jsz").get("meta_cluster") or {}
            except Unavailable as exc:
                return exc.message
            if health.get("status") != "ok":
                return f"{node.name}: {health.get('error') or health}"
            leader = meta.get("leader")
            if len(self.nodes) > 1 and not leader:
                return f"{node.name} knows no JetStream meta leader"
            if len(self.nodes) > 1 and leader not in {n.name for n in self.live()}:
                return f"{node.name} still follows meta leader {leader}, which is not live"
        return None

    def live(self) -> list[ClusterNode]:
        """The nodes whose process runs and is not paused."""
        return [n for n in self.nodes if n.running and not n.paused]

    def meta_leader(self) -> ClusterNode | None:
        """The JetStream meta leader, as the first live node that knows one says."""
        for node in self.live():
            try:
                leader = (node.monitor("/jsz").get("meta_cluster") or {}).get("leader")
            except Unavailable:
                continue
            if leader:
                return self.node(leader)
        return None

    async def stream_info(self, stream: str, timeout: float = 10.0) -> dict[str, Any]:
        """``$JS.API.STREAM.INFO.<stream>`` as the service user, retried (through the live
        nodes: a paused one would stall the connect) until the stream has a leader or
        ``timeout`` passes."""
        from cairn.bus import connect

        live = self.live()
        if not live:
            raise Unavailable(f"no node of the cluster runs to ask about stream {stream}")
        settings = self.settings(user=SERVICE_USER, nodes=live, request_timeout=2.0)
        deadline = time.monotonic() + timeout
        last: object = None
        conn = await connect(settings, name="cairn-cluster-probe")
        try:
            while time.monotonic() < deadline:
                try:
                    msg = await conn.nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
                    info: dict[str, Any] = json.loads(msg.data)
                except Exception as exc:  # no responder or timeout during an election
                    last = exc
                else:
                    if "error" not in info and (info.get("cluster") or {}).get("leader"):
                        return info
                    if "error" not in info and len(self.nodes) == 1:
                        return info
                    last = info.get("error") or "no leader"
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise Unavailable(f"stream {stream} has no leader after {timeout}s: {last}")

    async def stream_leader(self, stream: str, timeout: float = 10.0) -> ClusterNode:
        """The node that leads ``stream`` now (``cluster.leader`` of its info)."""
        info = await self.stream_info(stream, timeout)
        leader = (info.get("cluster") or {}).get("leader")
        return self.node(leader) if leader else self.nodes[0]

    async def wait_current(self, stream: str, timeout: float = 30.0) -> dict[str, Any]:
        """Until ``stream`` has a live leader and every replica it was configured with is
        current (after a restart: caught up); returns its info. ``Unavailable`` after
        ``timeout``."""
        deadline = time.monotonic() + timeout
        why = "not asked yet"
        while time.monotonic() < deadline:
            info = await self.stream_info(stream, max(deadline - time.monotonic(), 0.1))
            cluster = info.get("cluster") or {}
            followers = cluster.get("replicas") or []
            want = int(info["config"].get("num_replicas", 1))
            live = {n.name for n in self.live()}
            behind = [f["name"] for f in followers if not f.get("current") or f["name"] not in live]
            if len(self.nodes) == 1 or (
                cluster.get("leader") in live and len(followers) == want - 1 and not behind
            ):
                return info
            why = f"leader {cluster.get('leader')}, not current: {behind or 'replicas missing'}"
            await asyncio.sleep(0.1)
        raise Unavailable(f"stream {stream}'s replicas are not current after {timeout}s: {why}")

    def connected_node(self, nc: Any) -> ClusterNode:
        """The node a nats-py client (``conn.nc``) is connected to now."""
        url = nc.connected_url
        if url is None:
            raise Unavailable("the client is not connected")
        for node in self.nodes:
            if url.port == node.port and url.hostname == node.host:
                return node
        raise InvalidInput(f"the client is connected to {url.netloc}, not a node of this cluster")

    def settings(
        self,
        *,
        user: str | None = None,
        nodes: Iterable[ClusterNode] | None = None,
        **extra: Any,
    ) -> Settings:
        """Settings that connect as ``user``: ``cairn-service``, ``cairn-agent``,
        ``cairn-admin`` or a person (default: the local person), to every node (or to
        ``nodes`` alone, in their order), with the cluster's ``stream_replicas`` (as
        ``config.json``); ``extra`` sets other fields (``request_timeout``, ``state_dir``,
        ``stream_replicas=None`` to let the server's INFO decide...)."""
        creds = self.credentials
        passwords = {
            SERVICE_USER: creds.service_password,
            AGENT_USER: creds.agent_password,
            ADMIN_USER: self.admin_password,
            **{name: p.password for name, p in creds.people.items()},
        }
        user = user or creds.client_user
        if user not in passwords:
            raise InvalidInput(f"no user {user!r} in {self.credentials_file}")
        if self.tls is not None:
            extra = {"tls_ca": str(self.tls.ca), **extra}
        values = {
            "home": str(self.folder),
            "nats_url": self.url if nodes is None else ",".join(n.url for n in nodes),
            "nats_user": user,
            "nats_password": passwords[user],
            "stream_replicas": self.replicas,
            **extra,
        }
        return msgspec.convert(values, Settings)

    @property
    def replicas(self) -> int:
        """The replicas of every stream and bucket on this cluster: ``CLUSTER_REPLICAS`` (3),
        or fewer nodes' worth (1 for a single node)."""
        return min(CLUSTER_REPLICAS, len(self.nodes))

    def client_config(self) -> dict[str, Any]:
        """What ``config.json`` in the folder says (the local person over every node, and the
        replicas streams keep), so that ``CAIRN_HOME=<folder>`` commands and services reach
        the cluster and provision what it warrants."""
        s = self.settings()
        config: dict[str, Any] = {
            "nats_url": s.nats_url,
            "nats_user": s.nats_user or "",
            "nats_password": s.nats_password or "",
            "workspace": s.workspace,
            "stream_replicas": self.replicas,
        }
        if s.tls_ca is not None:
            config["tls_ca"] = s.tls_ca
        return config


def _route_password(path: Path) -> str:
    """The routes' password (``cluster.json``, 0600), made on first use."""
    if path.exists():
        try:
            password = str(json.loads(path.read_text())["route_password"])
        except (OSError, ValueError, KeyError) as exc:
            raise CairnError(f"{path} cannot be read: {exc}") from exc
        return password
    password = secrets.token_urlsafe(24)
    body = {"route_user": ROUTE_USER, "route_password": password}
    write_private(path, json.dumps(body, indent=2) + "\n")
    return password
