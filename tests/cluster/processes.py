"""Cairn's services and agents as separate processes: ``cairn serve <service>`` with the
service user's credentials (``--creds``), ``cairn agent`` with the agent user's, each with a
read-model folder of its own (as on a machine of its own) and its log in a file.

The services share one home (its ``keys/``: workspace keys and the audit key, as replicas on
several machines are given the same ones) and one artifact store (local folders standing in
for S3); each agent has a home of its own. Any process may reach the server through an address
of its own (a :class:`~tests.cluster.proxy.Proxy`, to partition it alone). :meth:`Processes.close`
kills what is still running, so a failed test leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cairn.bus import Connection
from cairn.embedded import NatsCluster, NatsServer
from cairn.embedded._auth import AGENT_USER
from cairn.embedded._server import SERVICE_USER
from cairn.rpc import ping_all

__all__ = ["CAIRN", "SERVICES", "Processes", "Spawned"]

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]

#: every service ``cairn serve`` runs but the gateway (which holds no credentials of its own)
SERVICES = (
    "tracking",
    "ingester",
    "artifacts",
    "registry",
    "scheduler",
    "pipelines",
    "sweeps",
    "schedules",
    "webhooks",
    "audit",
)


@dataclass(eq=False)
class Spawned:
    """One process: ``kind`` is the service's name (or ``agent``), ``name`` is unique."""

    kind: str
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    nats_url: str
    killed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def instance(self) -> str:
        """How the process names itself in its ping answers (``cairn.rpc.answer_pings``)."""
        return f"{socket.gethostname()}:{self.pid}"

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Spawns and kills Cairn processes against ``server`` (one server, or a cluster whose
    every node a process may reach) under ``root``."""

    def __init__(
        self, root: Path, server: NatsServer | NatsCluster, settings: dict[str, object]
    ) -> None:
        assert server.credentials is not None
        self.root = root
        self.server = server
        self.settings = settings
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.creds = root / "service.json"
        self.creds.write_text(
            json.dumps({"user": SERVICE_USER, "password": server.credentials.service_password})
        )
        self.creds.chmod(0o600)
        self.agent_password = server.credentials.agent_password
        self.spawned: list[Spawned] = []

    def _env(self, nats_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        env.update(
            CAIRN_NATS_URL=nats_url,
            CAIRN_LOG_FORMAT="json",
            CAIRN_REQUEST_TIMEOUT="3",
            **{f"CAIRN_{k.upper()}": str(v) for k, v in self.settings.items()},
        )
        return env

    async def _spawn(self, kind: str, name: str, argv: list[str], env: dict[str, str]) -> Spawned:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        spawned = Spawned(kind, name, proc, log, env["CAIRN_NATS_URL"])
        self.spawned.append(spawned)
        return spawned

    async def serve(self, service: str, name: str, nats_url: str | None = None) -> Spawned:
        """``cairn serve <service>`` as the service user, its read models in a folder of its
        own (``name`` tells replicas apart)."""
        env = self._env(nats_url or self.server.url)
        env.update(
            CAIRN_HOME=str(self.home),
            CAIRN_STATE_DIR=str(self.root / "state" / name),
            CAIRN_ARTIFACTS_DIR=str(self.root / "artifacts"),
        )
        argv = [*CAIRN, "serve", service, "--creds", str(self.creds)]
        return await self._spawn(service, name, argv, env)

    async def agent(
        self,
        workspace: str,
        name: str,
        *,
        slots: int = 1,
        compute: str = "local",
        nats_url: str | None = None,
    ) -> Spawned:
        """``cairn agent --compute <compute>`` as the agent user, for ``workspace``, with a
        home of its own (as on a worker machine)."""
        env = self._env(nats_url or self.server.url)
        home = self.root / "agents" / name
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            CAIRN_HOME=str(home),
            CAIRN_NATS_USER=AGENT_USER,
            CAIRN_NATS_PASSWORD=self.agent_password,
            CAIRN_WORKSPACE=workspace,
        )
        argv = [*CAIRN, "agent", "--compute", compute, "--slots", str(slots)]
        return await self._spawn("agent", name, argv, env)

    async def kill(self, spawned: Spawned) -> None:
        """kill -9, and reap it."""
        if spawned.alive:
            spawned.proc.send_signal(signal.SIGKILL)
        spawned.killed = True
        await spawned.proc.wait()

    def living(self, kind: str | None = None) -> list[Spawned]:
        return [s for s in self.spawned if s.alive and kind in (None, s.kind)]

    async def wait_serving(
        self, conn: Connection, procs: list[Spawned], timeout: float = 120.0
    ) -> None:
        """Until each of ``procs`` answers a ping under its own name (a process answers once
        its services have started: ``cairn.service.run_services``); a process that exits
        meanwhile fails the wait with the end of its log."""
        want = {(s.kind, s.instance): s for s in procs}
        async with asyncio.timeout(timeout):
            while True:
                for s in want.values():
                    if not s.alive:
                        raise AssertionError(
                            f"{s.name} exited with {s.proc.returncode}:\n{s.tail()}"
                        )
                found = {(p["service"], p["instance"]) for p in await ping_all(conn, 0.5)}
                if want.keys() <= found:
                    return

    async def close(self) -> None:
        """Kill every process still running (a stopped one is continued first, so it dies)."""
        for spawned in self.spawned:
            if spawned.alive:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        spawned.proc.send_signal(sig)
                    except ProcessLookupError:
                        break
        for spawned in self.spawned:
            await spawned.proc.wait()
