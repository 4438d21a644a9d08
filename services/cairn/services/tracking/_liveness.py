"""Interactive runs whose process is gone are failed as lost.

A run logged from a script (``experiment.start_logging()``, ``AsyncExperiment.start_run``)
has no agent watching it: if its process is killed, nothing would ever end it. So the SDK
beats while the run is open (``HeartbeatRun`` every ``run_heartbeat_s``), and the tracking
service keeps the latest beat of each run in the ``cairn_run_heartbeats`` bucket (key
``<workspace>.<run>``: the interval the run beats at and the wall-clock time). Beats are not
decisions and are never appended to EVENTS; every replica mirrors the bucket through a
watcher, so whichever replica answered a beat, every replica sees the run as alive.

The decision they lead to is: a Running interactive run (the read model's ``live`` table,
rebuilt from the log) whose last sign of life — its start in the log, or a later beat — is
more than three beats old is failed with ``lost: no heartbeat for N s``, through the run
aggregate with a command id derived from the run, so replicas that reach it together take it
once, and a run that ended meanwhile is left as it is (the aggregate decides nothing). This is
the scheduler's lease (``cairn.services.scheduler._leases``) for runs without an agent.

After a start, and after its own connection to the bus came back, a replica waits one bound
before failing anything: beats sent while no tracking service answered (or while the bus was
away for everyone) get the chance to arrive again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from cairn.bus import Connection
from cairn.log import get_logger
from cairn.proto.streams import RUN_HEARTBEATS_BUCKET

__all__ = ["MISSES", "Beat", "Heartbeats", "bound_s", "lost_reason"]

log = get_logger("cairn.tracking")

#: beats a run may miss before it is failed as lost
MISSES = 3


class Beat(msgspec.Struct, frozen=True, array_like=True):
    every_s: float
    at: float


def bound_s(setting_s: float, beat: Beat | None) -> float:
    """How long a run may stay silent: three beats at the slower of the service's setting
    and the interval the run declared it beats at."""
    return MISSES * max(setting_s, beat.every_s if beat is not None else 0.0)


def lost_reason(bound: float) -> str:
    return f"lost: no heartbeat for {bound:g} s"


class Heartbeats:
    """The bucket, and this replica's mirror of it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seen: dict[tuple[str, str], Beat] = {}
        self._kv: Any = None
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await self.conn.js.key_value(RUN_HEARTBEATS_BUCKET.bucket)
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
                self.seen.pop((ws, run_id), None)
                continue
            with contextlib.suppress(msgspec.DecodeError):
                self.seen[(ws, run_id)] = msgspec.json.decode(entry.value, type=Beat)

    async def beat(self, ws: str, run_id: str, every_s: float) -> None:
        beat = Beat(every_s, time.time())
        self.seen[(ws, run_id)] = beat
        await self._kv.put(f"{ws}.{run_id}", msgspec.json.encode(beat))

    async def latest(self, ws: str, run_id: str) -> Beat | None:
        """The bucket's own latest beat (the mirror may lag); None when there is none. Any
        other failure to read it raises: no run is failed on a guess."""
        try:
            entry = await self._kv.get(f"{ws}.{run_id}")
        except (KeyNotFoundError, KeyDeletedError):  # never beat, or its beat was deleted
            return None
        if not entry.value:
            return None
        try:
            beat = msgspec.json.decode(entry.value, type=Beat)
        except msgspec.DecodeError:
            return None
        self.seen[(ws, run_id)] = beat
        return beat

    async def forget(self, ws: str, run_id: str) -> None:
        """Delete the run's beat (its run has ended)."""
        self.seen.pop((ws, run_id), None)
        with contextlib.suppress(Exception):
            await self._kv.delete(f"{ws}.{run_id}")
