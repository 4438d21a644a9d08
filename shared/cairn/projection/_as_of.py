"""An entity, or a listing, as of a moment, answered from the log: the messages of a subject
(one aggregate's, or a filter with wildcards such as every model of a workspace) up to a
stream sequence or a time, applied by the live read model's own projection into a database of
their own (in memory), where the live read model's own queries answer. Nothing is read from
the current tables, so what a run looked like an hour ago is what its events then made it,
and the runs of an experiment then are those its events then held.

A history up to a point never changes, so what is built is kept (a small LRU per process,
keyed by the subject and the last sequence it holds) for the next question about the same
moment."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cairn.bus import EventStore, Stored
from cairn.projection._engine import Delivered, Projection, Tables, _kind

__all__ = ["AsOfReadModels"]

#: entities whose read model as of some moment a process keeps
_KEEP = 64


class AsOfReadModels:
    """Read models of a subject's history up to a point, built with ``make()``'s projection
    from ``store``'s messages and kept."""

    def __init__(self, store: EventStore, make: Callable[[], Projection[Any]]) -> None:
        self.store = store
        self.make = make
        self._kept: OrderedDict[tuple[str, int], tuple[sqlite3.Connection, Tables]] = OrderedDict()

    async def build(
        self, subject: str, *, up_to_seq: int | None, up_to_time: datetime | None
    ) -> tuple[sqlite3.Connection, Tables, int]:
        """The read model of the messages on ``subject`` (wildcards allowed) up to
        ``up_to_seq`` and stored at or before ``up_to_time``, and the last sequence in it: 0
        when there was none (the read model is then empty)."""
        stored = await self.store.read_stored(subject, up_to_seq=up_to_seq)
        if up_to_time is not None:
            stored = [m for m in stored if m.time is not None and m.time <= up_to_time]
        kinds = self.make().source.kinds
        if kinds is not None:  # as the live runner: only the projection's aggregate kinds
            stored = [m for m in stored if _kind(m.subject) in kinds]
        key = (subject, stored[-1].seq if stored else 0)
        if key in self._kept:
            self._kept.move_to_end(key)
        else:  # no await from here on: one event loop, no lock
            self._kept[key] = _apply(self.make(), stored)
            while len(self._kept) > _KEEP:
                _, (old, _t) = self._kept.popitem(last=False)
                old.close()
        db, t = self._kept[key]
        return db, t, key[1]

    def close(self) -> None:
        for db, _ in self._kept.values():
            db.close()
        self._kept.clear()


def _apply(projection: Projection[Any], stored: list[Stored]) -> tuple[sqlite3.Connection, Tables]:
    """A fresh in-memory read model of ``stored``. A message that does not decode or apply is
    left out, as the live read model sets it aside."""
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    t = Tables(projection.name, 1)
    projection.create(db, t)
    db.execute("BEGIN")
    for msg in stored:
        try:
            value = projection.source.decode(msg.data)
        except Exception:  # the live read model quarantines it too
            continue
        db.execute("SAVEPOINT cairn_as_of")
        try:
            projection.apply(db, t, Delivered(msg.seq, msg.subject, value))
        except Exception:
            db.execute("ROLLBACK TO cairn_as_of")
        finally:
            db.execute("RELEASE cairn_as_of")
    db.execute("COMMIT")
    return db, t
