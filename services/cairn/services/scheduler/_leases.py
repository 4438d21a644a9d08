"""Job leases shared by every scheduler replica.

A lease runs from the attempt's last sign of life. The log holds the first ones: the claim
(``RunAssigned``) and the start (``RunStarted``) are events with a time, so a short job never
writes a renewal. The agent's progress reports, which append nothing, renew it in the
``cairn_job_leases`` bucket (key ``<workspace>.<run>``: attempt and wall-clock time), and every
replica mirrors the bucket through a watcher, so whichever replica answered a report, every
replica sees the run as alive. Renewals are not decisions and are not appended to EVENTS; the
expiry they lead to is (``RunRequeued``), through the run aggregate with a derived command
id, so replicas that reach it together take it once.

After a start a replica waits one lease before expiring anything: agents whose reports failed
while no scheduler ran get the chance to report again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from cairn.bus import Connection
from cairn.log import get_logger
from cairn.proto.streams import LEASES_BUCKET

__all__ = ["Leases"]

log = get_logger("cairn.scheduler")


class _Renewal(msgspec.Struct, frozen=True, array_like=True):
    attempt: int
    at: float


class Leases:
    def __init__(self, conn: Connection, lease_s: float) -> None:
        self.conn, self.lease_s = conn, lease_s
        self.renewed: dict[tuple[str, str], _Renewal] = {}
        self.started = time.monotonic()
        self._kv: Any = None
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await self.conn.js.key_value(LEASES_BUCKET.bucket)
        self._watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # the end of the initial values
                continue
            ws, _, run_id = entry.key.partition(".")
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.renewed.pop((ws, run_id), None)
                continue
            with contextlib.suppress(msgspec.DecodeError):
                self.renewed[(ws, run_id)] = msgspec.json.decode(entry.value, type=_Renewal)

    async def renew(self, ws: str, run_id: str, attempt: int) -> None:
        renewal = _Renewal(attempt, time.time())
        self.renewed[(ws, run_id)] = renewal
        await self._kv.put(f"{ws}.{run_id}", msgspec.json.encode(renewal))

    async def end(self, ws: str, run_id: str) -> None:
        """Forget the run's renewal, if it has one (most jobs end before their first)."""
        if self.renewed.pop((ws, run_id), None) is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(f"{ws}.{run_id}")

    def expired(self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float) -> bool:
        """Whether attempt ``attempt`` has gone a lease without a sign of life: ``alive_at``
        (its last one in the log) or a later renewal of that attempt."""
        if time.monotonic() - self.started < lease_s:
            return False
        renewal = self.renewed.get((ws, run_id))
        if renewal is not None and renewal.attempt == attempt:
            alive_at = max(alive_at, renewal.at)
        return time.time() > alive_at + lease_s
