"""Commands that must not be lost when the bus is away: send, or spool to disk and replay.

While the bus answers, a command is sent and its reply returned. When it does not (not
connected, or no answer after retries), the command is appended to a spool file (one JSON line,
fsynced) and every later command of this process goes there too, so order is kept. Replaying
sends the spooled commands in order with their original ids: the services' idempotency
(``Nats-Msg-Id``, the causation lookup, the ingester's batch ids) makes a command that did reach
the bus before the outage take effect once.

A spool file is locked (``flock``) by the process writing it; ``cairn sync`` replays the files
no live process holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import msgspec

from cairn.errors import CairnError, Unavailable
from cairn.log import get_logger
from cairn.proto.commands import COMMAND_TYPES, Accepted, Command
from cairn.proto.metrics import LogMetrics
from cairn.rpc import Client

__all__ = ["Outbox", "Spool", "replay_spool_dir"]

log = get_logger("cairn.sdk")
SPOOLED_TYPES = (*COMMAND_TYPES, LogMetrics)


if TYPE_CHECKING:
    Spooled = Command
else:  # msgspec decodes the tagged union of every spooled command type
    Spooled = Union[SPOOLED_TYPES]  # noqa: UP007 - a union built from a tuple


class SpoolEntry(msgspec.Struct, frozen=True):
    workspace: str
    command: Spooled


_entry_decoder = msgspec.json.Decoder(SpoolEntry)
_encoder = msgspec.json.Encoder()


class Spool:
    """One append-only, fsynced JSON-lines file, held locked while open."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._fd: int | None = None

    def append(self, workspace: str, command: Command) -> None:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._fd, _encoder.encode(SpoolEntry(workspace, command)) + b"\n")
        os.fsync(self._fd)

    def entries(self) -> list[SpoolEntry]:
        return list(_read(self.path)) if self.path else []

    @property
    def pending(self) -> bool:
        return self._fd is not None

    def discard(self) -> None:
        """Forget the file once every entry has been replayed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read(path: Path) -> Iterator[SpoolEntry]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    yield _entry_decoder.decode(line)
                except msgspec.DecodeError:  # a line torn by a crash mid-write
                    log.warning("spool_line_skipped", path=str(path))


async def _replay(clients: dict[str, Client], make: Any, entries: list[SpoolEntry]) -> int:
    done = 0
    for entry in entries:
        client = clients.get(entry.workspace) or clients.setdefault(entry.workspace, make(entry))
        try:
            await client.send(entry.command)
        except Unavailable:
            raise
        except CairnError as exc:  # refused for good (e.g. an invalid transition): report, go on
            log.warning("spooled_command_refused", code=exc.code, error=exc.message)
        done += 1
    return done


class Outbox:
    """Sends commands for one workspace, spooling them while the bus is unreachable."""

    def __init__(self, client: Client, spool_dir: Path) -> None:
        self.client = client
        self.spool = Spool(spool_dir)
        self._lock = asyncio.Lock()

    @property
    def offline(self) -> bool:
        return self.spool.pending

    async def send(self, command: Command) -> Accepted | None:
        """The reply, or None when the command was spooled. Sends may overlap (metric batches
        are pipelined); a caller that needs order awaits one send before the next."""
        if not self.offline and self.client.conn.nc.is_connected:
            try:
                return await self.client.send(command)
            except Unavailable as exc:
                log.warning("bus_unreachable_spooling", error=exc.message)
        async with self._lock:
            self.spool.append(self.client.workspace, command)
        return None

    async def replay(self) -> bool:
        """Send what was spooled; True when nothing is left."""
        async with self._lock:
            if not self.offline:
                return True
            if not self.client.conn.nc.is_connected:
                return False
            try:
                await _replay({self.client.workspace: self.client}, None, self.spool.entries())
            except Unavailable:
                return False
            self.spool.discard()
            log.info("spool_replayed")
            return True

    def close(self) -> None:
        self.spool.close()


async def replay_spool_dir(directory: Path, make_client: Any) -> tuple[int, int]:
    """``cairn sync``: replay every spool file no live process holds. Returns (files, commands)."""
    files = commands = 0
    clients: dict[str, Client] = {}
    for path in sorted(directory.glob("*.jsonl")) if directory.exists() else []:
        with open(path, "rb+") as held:
            try:
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and will replay it itself
            commands += await _replay(clients, make_client, list(_read(path)))
            path.unlink()
            files += 1
    with contextlib.suppress(OSError):
        directory.rmdir()
    return files, commands
