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

import time

import msgspec

from cairn.bus import Connection, RunKeyMirror
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
        self.keys = RunKeyMirror(conn, LEASES_BUCKET.bucket, _Renewal)
        self.started = time.monotonic()

    @property
    def renewed(self) -> dict[tuple[str, str], _Renewal]:
        return self.keys.values

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    async def renew(self, ws: str, run_id: str, attempt: int) -> None:
        await self.keys.put(ws, run_id, _Renewal(attempt, time.time()))

    async def end(self, ws: str, run_id: str) -> None:
        """Forget the run's renewal, if it has one (most jobs end before their first)."""
        if (ws, run_id) in self.renewed:
            await self.keys.delete(ws, run_id)

    def expired(self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float) -> bool:
        """Whether attempt ``attempt`` has gone a lease without a sign of life: ``alive_at``
        (its last one in the log) or a later renewal of that attempt."""
        if time.monotonic() - self.started < lease_s:
            return False
        renewal = self.renewed.get((ws, run_id))
        if renewal is not None and renewal.attempt == attempt:
            alive_at = max(alive_at, renewal.at)
        return time.time() > alive_at + lease_s
