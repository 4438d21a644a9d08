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

import time

import msgspec

from cairn.bus import Connection, RunKeyMirror
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
        self.keys = RunKeyMirror(conn, RUN_HEARTBEATS_BUCKET.bucket, Beat)

    @property
    def seen(self) -> dict[tuple[str, str], Beat]:
        return self.keys.values

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    async def beat(self, ws: str, run_id: str, every_s: float) -> None:
        await self.keys.put(ws, run_id, Beat(every_s, time.time()))

    async def latest(self, ws: str, run_id: str) -> Beat | None:
        """The bucket's own latest beat (the mirror may lag); None when there is none. Any
        other failure to read it raises: no run is failed on a guess."""
        return await self.keys.read(ws, run_id)

    async def forget(self, ws: str, run_id: str) -> None:
        """Delete the run's beat (its run has ended)."""
        await self.keys.delete(ws, run_id)
