"""Spooled commands: what a process could not send while the bus was away, kept on disk and
sent later, in order, with their original ids (the services' idempotency makes a command that
did reach the bus before the outage take effect once).

A spool file (``<home>/spool/<pid>-<random>.jsonl``) is append-only JSON lines, one command and
its workspace each, fsynced, locked (``flock``) by the process writing it while it lives.
:func:`send_spool_dir` sends the files no live process holds and deletes each once every command
in it was accepted or refused for good. A refused command is not dropped: it is appended, with
the refusal's code and message, to ``<spool>/refused/<file>`` and counted as refused. The bus
going away mid-file keeps the file for the next try.

Who sends: the process that spooled, once the bus is back (the SDK's outbox); ``cairn sync``;
and, without anyone asking, every agent and ``cairn up`` (at start, then every
``SEND_EVERY_S``) for the spool of their home.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import msgspec

from cairn.bus import Connection
from cairn.errors import CairnError, PermissionDenied, Unauthenticated, Unavailable
from cairn.log import get_logger
from cairn.proto.commands import COMMAND_TYPES, Command
from cairn.proto.metrics import LogMetrics
from cairn.rpc import Client

__all__ = [
    "SEND_EVERY_S",
    "Refused",
    "Spool",
    "SpoolEntry",
    "SpoolReport",
    "send_entries",
    "send_spool_dir",
    "send_spools_periodically",
]

log = get_logger("cairn.spool")
SPOOLED_TYPES = (*COMMAND_TYPES, LogMetrics)
#: how often agents and ``cairn up`` look for spool files to send
SEND_EVERY_S = 30.0
REFUSED_DIR = "refused"

if TYPE_CHECKING:
    Spooled = Command
else:  # msgspec decodes the tagged union of every spooled command type
    Spooled = Union[SPOOLED_TYPES]  # noqa: UP007 - a union built from a tuple


class SpoolEntry(msgspec.Struct, frozen=True):
    workspace: str
    command: Spooled


class Refused(msgspec.Struct, frozen=True):
    """A spooled command the bus refused for good, and why."""

    workspace: str
    command: Spooled
    code: str
    message: str


@dataclass
class SpoolReport:
    """What one pass over a spool folder did."""

    files: int = 0
    sent: int = 0
    #: files left for an identity the bus lets send them (``cairn sync`` by their owner)
    kept: int = 0
    refused: list[Refused] = field(default_factory=list)
    #: where the refused commands were kept
    refused_dir: Path | None = None

    def reasons(self) -> dict[tuple[str, str], int]:
        """The refusals counted by (code, message)."""
        counts: dict[tuple[str, str], int] = {}
        for r in self.refused:
            counts[(r.code, r.message)] = counts.get((r.code, r.message), 0) + 1
        return counts


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
        return list(read_entries(self.path)) if self.path else []

    @property
    def pending(self) -> bool:
        return self._fd is not None

    def discard(self) -> None:
        """Forget the file once every entry has been sent."""
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


def read_entries(path: Path) -> Iterator[SpoolEntry]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    yield _entry_decoder.decode(line)
                except msgspec.DecodeError:  # a line torn by a crash mid-write
                    log.warning("spool_line_skipped", path=str(path))


def _keep_refused(path: Path, refused: list[Refused]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"".join(_encoder.encode(r) + b"\n" for r in refused))
        os.fsync(fd)
    finally:
        os.close(fd)


async def send_entries(
    clients: dict[str, Client],
    make_client: Callable[[SpoolEntry], Client],
    entries: list[SpoolEntry],
    refused_file: Path,
) -> tuple[int, list[Refused]]:
    """Send ``entries`` in order: (sent, refused). A refused one is logged and appended to
    ``refused_file``; ``Unavailable`` (the bus is away), ``PermissionDenied`` and
    ``Unauthenticated`` (this sender may not) stop and are raised."""
    sent, refused = 0, []
    try:
        for entry in entries:
            client = clients.get(entry.workspace)
            if client is None:
                client = clients[entry.workspace] = make_client(entry)
            try:
                await client.send(entry.command)
            except (Unavailable, PermissionDenied, Unauthenticated):
                raise  # a verdict on the bus or on who sends, not on the command
            except CairnError as exc:  # refused for good (e.g. an invalid transition)
                log.warning("spooled_command_refused", code=exc.code, error=exc.message)
                refused.append(Refused(entry.workspace, entry.command, exc.code, exc.message))
                continue
            sent += 1
    finally:
        if refused:
            _keep_refused(refused_file, refused)
    return sent, refused


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.exists() else []


def _take(path: Path) -> int | None:
    """A descriptor of ``path`` holding its lock, or None: sent by another process meanwhile,
    or held by the live process that writes it (and sends it itself)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink > 0:  # not finished by a sender between our open and lock
            return fd
    except BlockingIOError:
        pass
    os.close(fd)
    return None


def _done(path: Path, fd: int) -> None:
    path.unlink()
    os.close(fd)


async def send_spool_dir(
    directory: Path, make_client: Callable[[SpoolEntry], Client]
) -> SpoolReport:
    """Send every spool file in ``directory`` that no live process holds (``cairn sync``, and
    agents and ``cairn up`` on their own). ``Unavailable`` when the bus went away meanwhile
    (the file being sent is kept)."""
    refused_dir = directory / REFUSED_DIR
    report = SpoolReport(refused_dir=refused_dir)
    clients: dict[str, Client] = {}
    for path in _files(directory):
        fd = _take(path)
        if fd is None:
            continue
        try:
            entries = list(read_entries(path))
            sent, refused = await send_entries(
                clients, make_client, entries, refused_dir / path.name
            )
        except (PermissionDenied, Unauthenticated) as exc:  # the sender's, not the file's
            log.warning("spool_not_sent_by_this_identity", path=str(path), error=exc.message)
            report.kept += 1
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        _done(path, fd)
        report.files += 1
        report.sent += sent
        report.refused += refused
    return report  # the folder stays: a script may be about to spool into it


async def send_spools_periodically(
    conn: Connection, directory: Path, stop: asyncio.Event, every_s: float = SEND_EVERY_S
) -> None:
    """At once, then every ``every_s`` until ``stop``: send the spool files of ``directory``
    (what scripts on this machine could not send) over ``conn``. A pass that meets an outage
    waits for the next."""
    clients: dict[str, Client] = {}

    def client_for(entry: SpoolEntry) -> Client:
        if entry.workspace not in clients:
            clients[entry.workspace] = Client(conn, entry.workspace)
        return clients[entry.workspace]

    while not stop.is_set():
        if _files(directory):
            try:
                report = await send_spool_dir(directory, client_for)
            except Unavailable as exc:
                log.info("spool_send_postponed", error=exc.message)
            except Exception as exc:  # a broken file must not stop the caller
                log.warning("spool_send_failed", error=repr(exc))
            else:
                if report.files:
                    log.info(
                        "spool_sent",
                        files=report.files,
                        sent=report.sent,
                        refused=len(report.refused),
                    )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
