"""Job leases shared by every scheduler replica.

A lease runs from the attempt's last sign of life. The log holds the first ones: the claim
(``RunAssigned``) and the start (``RunStarted``) are events with a time, so a short job never
writes a renewal. The agent's progress reports, which append nothing, renew it in the
``cairn_job_leases`` bucket (key ``<workspace>.<run>``: attempt and wall-clock time), and every
replica mirrors the bucket through a watcher, so whichever replica answered a report, every
replica sees the run as alive. Renewals are not decisions and are not appended to EVENTS; the
expiry they lead to is (``RunRequeued``), through the run aggregate with a derived command
id, so replicas that reach it together take it once.

After a start, and after its own connection to the bus was lost or came back (stamped by the
client's own callbacks, ``Connection.link_changed``), a replica waits one lease
before expiring anything: agents whose reports failed while no scheduler ran (or could not
reach this one) get the chance to report again, and this replica's mirror the time to catch up.
An expiry its mirror suggests is checked against the bucket itself before it is decided: a
replica cut off from the bus missed the renewals other replicas wrote meanwhile, and a request
it sends while cut off is buffered by the client and would still reach the server once the
connection is back, so it takes no decision while it is away (``away()``).
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

    def away(self) -> None:
        """This replica's connection is down: count a new lease from now (its renewals can
        only be seen again once the connection is back)."""
        self.started = time.monotonic()

    def expired(self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float) -> bool:
        """Whether attempt ``attempt`` has gone a lease without a sign of life, as this
        replica's mirror has it: ``alive_at`` (its last one in the log) or a later renewal of
        that attempt."""
        # a start, or the link lost or back (stamped by the client's callbacks, so an outage
        # that ends between two reconcile passes counts too)
        if time.monotonic() - max(self.started, self.conn.link_changed) < lease_s:
            return False
        return _silent(self.renewed.get((ws, run_id)), attempt, lease_s, alive_at)

    async def confirmed(
        self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float
    ) -> bool:
        """Whether the bucket itself (not the mirror, which may lag) says the attempt has gone
        a lease without a sign of life. A bucket that cannot be read raises."""
        return _silent(await self.keys.read(ws, run_id), attempt, lease_s, alive_at)


def _silent(renewal: _Renewal | None, attempt: int, lease_s: float, alive_at: float) -> bool:
    if renewal is not None and renewal.attempt == attempt:
        alive_at = max(alive_at, renewal.at)
    return time.time() > alive_at + lease_s
