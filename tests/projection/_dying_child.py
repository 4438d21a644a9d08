"""Run the tracking projection and SIGKILL this process in the middle of a batch.

Usage: python _dying_child.py SETTINGS_JSON DB_PATH KILL_AT BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from typing import Any

import msgspec

from cairn.bus import connect
from cairn.projection import Delivered, ProjectionRunner, Tables
from cairn.services.tracking import TrackingProjection
from cairn.settings import Settings


class DyingProjection(TrackingProjection):
    def __init__(self, kill_at: int) -> None:
        self.applied = 0
        self.kill_at = kill_at

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Any]) -> None:
        super().apply(db, t, item)
        self.applied += 1
        if self.applied == self.kill_at:
            print(f"killing at seq {item.seq}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    settings = msgspec.json.decode(sys.argv[1], type=Settings)
    conn = await connect(settings)
    projection = DyingProjection(int(sys.argv[3]))
    runner = ProjectionRunner(conn, sys.argv[2], projection, batch_size=int(sys.argv[4]))
    await runner.run(asyncio.Event())


asyncio.run(main())
