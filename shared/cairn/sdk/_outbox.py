"""Commands that must not be lost when the bus is away: send, or spool to disk and replay.

While the bus answers, a command is sent and its reply returned. When it does not (not
connected, or no answer after retries), the command is appended to a spool file (one JSON line,
fsynced; :mod:`cairn.spool`) and every later command of this process goes there too, so order
is kept. Replaying sends the spooled commands in order with their original ids: the services'
idempotency (``Nats-Msg-Id``, the causation lookup, the ingester's batch ids) makes a command
that did reach the bus before the outage take effect once. A command refused for good is kept
beside the spool (``refused/``) with the reason.

A spool file is locked (``flock``) by the process writing it; what a process leaves behind is
sent by ``cairn sync``, and on their own by agents and ``cairn up`` on the same home.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cairn.errors import Unavailable
from cairn.log import get_logger
from cairn.proto.commands import Accepted, Command
from cairn.rpc import Client
from cairn.spool import REFUSED_DIR, Spool, SpoolEntry, SpoolReport, send_entries, send_spool_dir

__all__ = ["Outbox", "Spool", "SpoolReport", "replay_spool_dir"]

log = get_logger("cairn.sdk")


class Outbox:
    """Sends commands for one workspace, spooling them while the bus is unreachable."""

    def __init__(self, client: Client, spool_dir: Path) -> None:
        self.client = client
        self.spool = Spool(spool_dir)
        self._lock = asyncio.Lock()

    @property
    def offline(self) -> bool:
        """Commands wait in the spool (they are sent, in order, before any new one)."""
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
            assert self.spool.path is not None
            refused_file = self.spool.directory / REFUSED_DIR / self.spool.path.name
            try:
                await send_entries(
                    {self.client.workspace: self.client},
                    self._no_other_workspace,
                    self.spool.entries(),
                    refused_file,
                )
            except Unavailable:
                return False
            self.spool.discard()
            log.info("spool_replayed")
            return True

    def _no_other_workspace(self, entry: SpoolEntry) -> Client:
        raise AssertionError(f"a spool of {self.client.workspace} holds {entry.workspace}")

    def close(self) -> None:
        self.spool.close()


async def replay_spool_dir(
    directory: Path, make_client: Callable[[SpoolEntry], Client]
) -> SpoolReport:
    """``cairn sync``: send every spool file no live process holds (:mod:`cairn.spool`)."""
    return await send_spool_dir(directory, make_client)
