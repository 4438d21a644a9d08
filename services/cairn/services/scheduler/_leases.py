"""Job leases shared by every scheduler replica.

A lease runs from the attempt's last sign of life. The log holds the first ones: the claim
(``RunAssigned``) and the start (``RunStarted``) are events with a time, so a short job never
writes a renewal. The agent's progress reports, which append nothing, renew it in the
``cairn_job_leases`` bucket (key ``<workspace>.<run>``), and every replica mirrors the bucket
through a watcher, so whichever replica answered a report, every replica sees the run as alive.

Time is this replica's own: a sign of life counts from the local monotonic time at which this
replica first saw it (the key's new revision, or the read model's new ``alive_at``), never from
a writer's wall clock. After a start, and after each loss or recovery of its connection
(stamped by the client's callbacks, ``Connection.link_changed``), a replica waits one lease
before expiring anything.

The key orders a renewal against an expiry. An expiry the mirror suggests is read again from
the bucket's stream leader (not a direct get, which a stale replica may answer; no answer
counts as being away), and is taken only by a compare-and-set on that revision that writes a
lost marker for the attempt (``take_back``); ``LoseAttempt`` is appended only after that write
succeeded. A renewal is a compare-and-set too, and is refused with ``StaleAttempt`` when the key
holds the attempt's lost marker. So whichever write lands second fails: a renewal between an
expiry's read and its write makes the expiry fail, and a write sent late (buffered across a
reconnect) carries its old revision and fails on its own. A marker whose ``LoseAttempt`` did
not follow (the replica stopped, the append failed) is found by the next pass, which appends it
then (a derived command id: once).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec
import nats.errors

from cairn.bus import Connection, RunKeyMirror, permission_denied, transient
from cairn.errors import CairnError, ConcurrencyConflict, StaleAttempt, Unavailable
from cairn.log import get_logger
from cairn.proto.streams import LEASES_BUCKET

__all__ = ["LeaseRead", "Leases"]

log = get_logger("cairn.scheduler")
_RENEW_TRIES = 3


class _Renewal(msgspec.Struct, frozen=True, array_like=True):
    attempt: int
    #: the writer's wall clock, for people reading the bucket: never compared
    at: float
    #: the attempt's lease was taken back (an expiry's compare-and-set)
    lost: bool = False


class LeaseRead(msgspec.Struct, frozen=True, kw_only=True):
    """An expiry's read of the key from the leader: the revision its write must find."""

    ws: str
    run_id: str
    attempt: int
    revision: int
    #: the key already holds this attempt's lost marker (its decision may not have followed)
    taken: bool = False


class Leases:
    def __init__(self, conn: Connection, lease_s: float) -> None:
        self.conn, self.lease_s = conn, lease_s
        self.keys = RunKeyMirror(conn, LEASES_BUCKET.bucket, _Renewal)
        self.started = time.monotonic()
        #: per run, the log's last sign of life (attempt, ``alive_at``) and when it was seen
        self.logged: dict[tuple[str, str], tuple[int, float, float]] = {}

    @property
    def renewed(self) -> dict[tuple[str, str], _Renewal]:
        return self.keys.values

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    async def renew(self, ws: str, run_id: str, attempt: int) -> None:
        """Renew attempt ``attempt``'s lease, by compare-and-set on the key as the leader has
        it; ``StaleAttempt`` when an expiry took the lease back first, ``Unavailable`` when
        the bucket cannot be read or written now (no leader during an election, no answer):
        the agent's next report tries again, within the lease's slack; ``PermissionDenied``
        naming the subject when this service may not read or write the bucket."""
        for _ in range(_RENEW_TRIES):
            try:
                value, revision = await self.keys.leader(ws, run_id)
                if value is not None and value.lost and value.attempt >= attempt:
                    raise StaleAttempt(
                        f"attempt {attempt} of run {run_id} lost its lease (no report for a lease)"
                    )
                await self.keys.update(ws, run_id, _Renewal(attempt, time.time()), revision)
                return
            except ConcurrencyConflict:
                continue
            except (nats.errors.Error, TimeoutError) as exc:
                failure = self._failure(ws, run_id, exc)
                if not isinstance(failure, Unavailable):  # no matter of time: said here too
                    log.error("lease_renew_refused", run_id=run_id, error=str(failure))
                raise failure from exc
        raise ConcurrencyConflict(f"the lease of run {run_id} changed {_RENEW_TRIES} times")

    def _failure(self, ws: str, run_id: str, exc: Exception) -> CairnError:
        """What a failed read or write of the run's lease key is: ``PermissionDenied`` naming
        the subject when the server reported a permissions violation on it (which the client
        sees as a timeout), ``Unavailable`` when it may pass (``cairn.bus.transient``: a
        timeout, no responders, no leader now), the server's refusal otherwise."""
        bucket = self.keys.bucket
        denied = permission_denied(
            self.conn, f".STREAM.MSG.GET.KV_{bucket}", f"$KV.{bucket}.{ws}.{run_id}"
        )
        if denied is not None:
            return denied
        if not transient(exc):
            return CairnError(f"the lease of run {run_id} was refused: {exc}")
        return Unavailable(f"the lease of run {run_id} cannot be renewed now: {exc!r}")

    def _log_failure(self, event: str, ws: str, run_id: str, exc: Exception) -> None:
        failure = self._failure(ws, run_id, exc)
        if isinstance(failure, Unavailable):  # the next pass reads again
            log.warning(event, run_id=run_id, error=repr(exc))
        else:
            log.error(event, run_id=run_id, error=str(failure), code=failure.code)

    async def end(self, ws: str, run_id: str) -> None:
        """Forget the run's renewal, if it has one (most jobs end before their first)."""
        self.logged.pop((ws, run_id), None)
        if (ws, run_id) in self.renewed:
            await self.keys.delete(ws, run_id)

    def keep(self, active: Iterable[tuple[str, str]]) -> None:
        """Forget the log's signs of life of runs no longer active."""
        wanted = set(active)
        self.logged = {k: v for k, v in self.logged.items() if k in wanted}

    def away(self) -> None:
        """This replica's connection is down: count a new lease from now (its renewals can
        only be seen again once the connection is back)."""
        self.started = time.monotonic()

    def _last_sign(self, key: tuple[str, str], attempt: int, alive_at: float) -> float:
        """The local monotonic time of the attempt's last sign of life seen here."""
        now = time.monotonic()
        logged = self.logged.get(key)
        if logged is None or logged[:2] != (attempt, alive_at):
            logged = self.logged[key] = (attempt, alive_at, now)
        changed = self.keys.changed.get(key)
        return max(logged[2], changed[1] if changed is not None else 0.0)

    def expired(self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float) -> bool:
        """Whether, as this replica's mirror has it, attempt ``attempt`` has gone a lease
        without a sign of life (``alive_at``: its last one in the log), or its lease was
        taken back already."""
        now = time.monotonic()
        if now - max(self.started, self.conn.link_changed) < lease_s:
            return False
        key = (ws, run_id)
        value = self.renewed.get(key)
        if value is not None and value.lost and value.attempt == attempt:
            return True
        return now - self._last_sign(key, attempt, alive_at) >= lease_s

    async def read(
        self, ws: str, run_id: str, attempt: int, lease_s: float, alive_at: float
    ) -> LeaseRead | None:
        """The key as the leader has it, if it too shows the attempt silent for a lease (its
        revision is the one this replica saw change a lease ago); None otherwise, and when the
        leader cannot be asked (counted as being away)."""
        try:
            value, revision = await self.keys.leader(ws, run_id)
        except (nats.errors.Error, TimeoutError) as exc:
            self._log_failure("lease_unreadable", ws, run_id, exc)
            self.away()
            return None
        if value is not None and value.lost and value.attempt == attempt:
            return LeaseRead(ws=ws, run_id=run_id, attempt=attempt, revision=revision, taken=True)
        if time.monotonic() - self._last_sign((ws, run_id), attempt, alive_at) < lease_s:
            return None  # the leader has a revision this replica had not seen
        return LeaseRead(ws=ws, run_id=run_id, attempt=attempt, revision=revision)

    async def take_back(self, lease: LeaseRead) -> bool:
        """Write the attempt's lost marker if the key is still at the revision read; whether
        the lease is now taken back (False: a renewal or another write came first, or the
        write's outcome is unknown, which the next pass reads again)."""
        if lease.taken:
            return True
        marker = _Renewal(lease.attempt, time.time(), lost=True)
        try:
            await self.keys.update(lease.ws, lease.run_id, marker, lease.revision)
        except ConcurrencyConflict:
            log.info("lease_renewed_meanwhile", run_id=lease.run_id, attempt=lease.attempt)
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            self._log_failure("lease_take_back_failed", lease.ws, lease.run_id, exc)
            return False
        return True

    async def expire(self, lease: LeaseRead, decide: Callable[[], Awaitable[object]]) -> bool:
        """Take the lease back and, only if that succeeded, ``decide`` (append the loss)."""
        if not await self.take_back(lease):
            return False
        await decide()
        return True
