"""One node of a :class:`~cairn.embedded._cluster.NatsCluster`: a nats-server process over its
own folder, started, stopped, killed, paused and resumed one at a time."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from cairn.embedded._auth import write_private
from cairn.embedded._server import find_nats_server, server_config
from cairn.errors import CairnError, Unavailable

if TYPE_CHECKING:
    from cairn.embedded._cluster import NatsCluster

__all__ = ["ClusterNode"]

#: every node process this interpreter started and has not seen exit: killed at exit, so a
#: test run that dies (or forgets a teardown) leaves no server behind
_STARTED: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_left() -> None:
    for proc in list(_STARTED):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _STARTED.clear()


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
        scheme = "tls" if self.cluster.tls is not None else "nats"
        return f"{scheme}://{self.host}:{self.port}"

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
            tls=self.cluster.tls,
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
        self.check_store()
        self.write()
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, find_nats_server(), "-c", str(self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED.add(self.proc)
        self.paused = False
        return offset

    def check_store(self) -> None:
        """Refuse a store that holds a single server's streams (no JetStream meta layer): a
        cluster node does not bring them into the cluster (its peers know nothing of them),
        so the cluster would show an empty store, and provisioning would make new, empty
        streams over the history. Such a store is moved by a backup and restore, then
        ``cairn cluster migrate`` (ops/README.md)."""
        if len(self.cluster.nodes) == 1:
            return
        js = self.store / "jetstream"
        streams = sorted({p.name for p in js.glob("*/streams/*")} - {"$SYS"})
        if streams and not (js / "$SYS" / "_js_" / "_meta_").exists():
            raise CairnError(
                f"{self.store} holds the streams of a single server ({', '.join(streams)}),"
                f" which node {self.name} of a cluster would not bring into it: the cluster"
                " would start empty. Move them by a backup and restore onto the running"
                " cluster, then `cairn cluster migrate` (ops/README.md, 'Moving a single-node"
                " home onto a cluster')"
            )

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
        _STARTED.discard(self.proc)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (the store keeps what was synced)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            _STARTED.discard(self.proc)
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


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
