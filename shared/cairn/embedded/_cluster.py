"""A NATS JetStream cluster of real nats-server processes: the distributed profile's servers.

``cairn cluster init`` writes the folder this class works over, and tests (the cluster
profile's, the fault suite's) start and break its nodes through it::

    <folder>/credentials.json, admin.json, roles.json   who may connect (as ``cairn up``)
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
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cairn.embedded._auth import (
    ADMIN_USER,
    AGENT_USER,
    SERVICE_USER,
    Credentials,
    accounts_config,
    admin_password,
    write_private,
)
from cairn.embedded._server import find_nats_server, free_port, server_config
from cairn.errors import CairnError, InvalidInput, Unavailable
from cairn.settings import Settings

__all__ = ["ROUTE_USER", "ClusterNode", "NatsCluster", "check_node_count"]

#: the user routes between the nodes authenticate as (``cluster.json`` keeps its password)
ROUTE_USER = "cairn-route"
#: with ``base_port``: node ``i`` (from 0) serves clients on ``base + i``, routes on
#: ``base + ROUTE_OFFSET + i`` and monitoring on ``base + MONITOR_OFFSET + i``
#: (4222, 6222, 8222 for the first node by default, as nats-server's own defaults)
ROUTE_OFFSET = 2000
MONITOR_OFFSET = 4000


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


class ClusterNode:
    """One nats-server of a :class:`NatsCluster`: its folder, ports and process."""

    def __init__(
        self,
        cluster: NatsCluster,
        name: str,
        *,
        host: str,
        port: int,
        route_port: int,
        monitor_port: int,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.host = host
        self.port = port
        self.route_port = route_port
        self.monitor_port = monitor_port
        self.dir = cluster.folder / name
        self.conf = self.dir / "nats.conf"
        self.accounts_file = self.dir / "accounts.conf"
        self.store = self.dir / "store"
        self.log = self.dir / "server.log"
        self.pid_file = self.dir / "nats.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        #: the argv the server's command is run under (``["ip", "netns", "exec", NS]``: in a
        #: network namespace of its own, for partition tests; it must exec, keeping the pid)
        self.launcher: list[str] = []
        #: where monitoring listens: loopback (it has no authentication); a node in a network
        #: namespace of its own serves it on its own address
        self.monitor_host = "127.0.0.1"

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<ClusterNode {self.name} {self.url} {state}>"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.route_port}"

    @property
    def running(self) -> bool:
        """Its process is alive (a paused one too)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def config_text(self) -> str:
        return server_config(
            name=self.name,
            listen=f"{self.host}:{self.port}",
            store_dir=self.store,
            pid_file=self.pid_file,
            cluster=self.cluster.cluster_block(self),
            monitor=f"{self.monitor_host}:{self.monitor_port}",
            accounts_file=self.accounts_file,
        )

    def write(self) -> None:
        """This node's ``nats.conf`` and ``accounts.conf`` (0600: they hold passwords)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        write_private(self.accounts_file, self.cluster.accounts_text())
        write_private(self.conf, self.config_text())

    def spawn(self) -> int:
        """Start the process (its configs written again); return the log offset its start
        begins at. A no-op (the current offset) when it runs."""
        if self.running:
            return self.log.stat().st_size if self.log.exists() else 0
        self.write()
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, find_nats_server(), "-c", str(self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.paused = False
        return offset

    async def start(self, timeout: float = 20.0) -> None:
        """Start this node (if it is not running) and wait until it accepts clients."""
        offset = self.spawn()
        await self.wait_listening(offset, timeout)

    async def wait_listening(self, offset: int = 0, timeout: float = 20.0) -> None:
        """Until the process logged "Server is ready" (after ``offset``) and takes clients."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise Unavailable(f"nats-server {self.name} exited with {code}:\n{self.tail()}")
            ready = "Server is ready" in self.log.read_text(errors="replace")[offset:]
            if ready and _accepts(self.host, self.port):
                return
            await asyncio.sleep(0.05)
        raise Unavailable(f"nats-server {self.name} not ready within {timeout}s:\n{self.tail()}")

    async def restart(self, timeout: float = 20.0) -> None:
        """Stop (gracefully) and start again over the same store."""
        self.stop()
        await self.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM; a paused node is resumed first), SIGKILL if it does not
        exit within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (the store keeps what was synced)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process stays, answers nothing (its peers and clients time out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc is not None and self.proc.poll() is None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def monitor(self, path: str, timeout: float = 2.0) -> dict[str, Any]:
        """GET ``path`` (``/jsz``, ``/healthz``, ``/varz``...) from this node's monitoring
        port; ``Unavailable`` when it does not answer. A non-200 answer is returned as its
        JSON body too (``/healthz`` says why it is not ok)."""
        url = f"http://{self.monitor_host}:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                body: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                body = json.loads(exc.read() or b"{}")
        except (OSError, ValueError) as exc:
            raise Unavailable(f"{self.name}'s monitoring port does not answer: {exc}") from exc
        return body

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


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
    ) -> None:
        check_node_count(nodes)
        if len(hosts) not in (1, nodes):
            raise InvalidInput(f"give one host for every node or one per node ({nodes})")
        self.folder = folder
        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.credentials = Credentials.load_or_create(self.credentials_file)
        self.admin_password = admin_password(folder / "admin.json")
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
        return "\n".join(accounts_config(self.credentials, self.admin_password)) + "\n"

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
            "}",
        ]

    def write(self) -> None:
        """Every node's config (safe to repeat: the credentials are kept)."""
        for node in self.nodes:
            node.write()

    async def start(self, timeout: float = 30.0) -> None:
        """Start every node that is not running and wait until the cluster is ready."""
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
        names a JetStream meta leader in ``/jsz``; ``Unavailable`` after ``timeout``."""
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
            if len(self.nodes) > 1 and not meta.get("leader"):
                return f"{node.name} knows no JetStream meta leader"
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
        """``$JS.API.STREAM.INFO.<stream>`` as the service user, retried (through any live
        node) until the stream has a leader or ``timeout`` passes."""
        from cairn.bus import connect

        settings = self.settings(user=SERVICE_USER, request_timeout=2.0)
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

    def connected_node(self, nc: Any) -> ClusterNode:
        """The node a nats-py client (``conn.nc``) is connected to now."""
        url = nc.connected_url
        if url is None:
            raise Unavailable("the client is not connected")
        for node in self.nodes:
            if url.port == node.port and url.hostname == node.host:
                return node
        raise InvalidInput(f"the client is connected to {url.netloc}, not a node of this cluster")

    def settings(self, *, user: str | None = None, **extra: Any) -> Settings:
        """Settings that connect to every node as ``user``: ``cairn-service``,
        ``cairn-agent``, ``cairn-admin`` or a person (default: the local person); ``extra``
        sets other fields (``request_timeout``, ``state_dir``...)."""
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
        values = {
            "home": str(self.folder),
            "nats_url": self.url,
            "nats_user": user,
            "nats_password": passwords[user],
            **extra,
        }
        return msgspec.convert(values, Settings)

    def client_config(self) -> dict[str, str]:
        """What ``config.json`` in the folder says (the local person over every node), so that
        ``CAIRN_HOME=<folder>`` commands reach the cluster."""
        s = self.settings()
        return {
            "nats_url": s.nats_url,
            "nats_user": s.nats_user or "",
            "nats_password": s.nats_password or "",
            "workspace": s.workspace,
        }


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


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
