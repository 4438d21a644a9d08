"""A read model rebuilt from a recorded history, without a server: the messages of an export
(``cairn export``) or of a golden history (tests/golden), numbered as a fresh stream would
number them, applied as the live loop applies them (one transaction, an event that cannot be
applied set aside), then hashed as :func:`content_hash` hashes a live one and dumped row by row.

Two histories with the same messages in the same order give the same rows, whatever stream
sequences they had where they were recorded: that is how an export, its import into another
home and a replay of either are compared (docs/design.md, *Export and import*)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from cairn.projection._engine import (
    Delivered,
    Projection,
    Tables,
    _kind,
    content_hash,
    open_db,
)

__all__ = ["Offline", "dump_tables", "replay_offline", "subject_matches"]


class Offline(NamedTuple):
    """A read model rebuilt from a recorded history (``db`` still open)."""

    read_model: str
    #: the messages of the projection's stream it was given (the last sequence it applied)
    last_seq: int
    #: events of the projection's kinds it was given, and the errors of those it set aside
    events: int
    errors: list[str]
    hash: str
    db: sqlite3.Connection
    tables: Tables


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``subject`` matches ``pattern`` (``*`` one token, ``>`` the rest)."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)


def replay_offline(
    projection: Projection[Any], messages: Iterable[tuple[str, bytes]], path: Path | str = ""
) -> Offline:
    """Apply ``projection`` (a fresh instance) to ``messages`` of its stream, ``(subject,
    data)`` in stream order, numbered 1, 2, ... as a fresh stream numbers them, into a new
    SQLite file at ``path`` (default: in memory). Messages on subjects the projection does not
    follow keep their number and are passed over, as a live consumer passes them over."""
    db = open_db(path or ":memory:")
    t = Tables(projection.name, 1)
    source = projection.source
    errors: list[str] = []
    seq, events = 0, 0
    with db:
        db.execute("BEGIN")
        projection.create(db, t)
        for subject, data in messages:
            seq += 1
            if not subject_matches(source.subjects, subject):
                continue
            if source.kinds is not None and _kind(subject) not in source.kinds:
                continue
            events += 1
            db.execute("SAVEPOINT cairn_event")
            try:
                projection.apply(db, t, Delivered(seq, subject, source.decode(data)))
            except Exception as exc:  # set aside and named, as the live loop quarantines it
                db.execute("ROLLBACK TO cairn_event")
                errors.append(f"seq {seq} {subject}: {type(exc).__name__}: {exc}")
            finally:
                db.execute("RELEASE cairn_event")
    return Offline(projection.name, seq, events, errors, content_hash(db, projection, t), db, t)


def dump_tables(db: sqlite3.Connection, projection: Projection[Any], t: Tables) -> dict[str, Any]:
    """Every row of every table of one read model as JSON values, in :func:`content_hash`'s
    order: ``{table: {"columns": [...], "rows": [[...], ...]}}``."""
    out: dict[str, Any] = {}
    for table in sorted(projection.tables):
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({t(table)})")]
        order = ", ".join(f'"{c}"' for c in cols)
        rows = db.execute(f'SELECT * FROM "{t(table)}" ORDER BY {order}')
        out[table] = {
            "columns": cols,
            "rows": [json.loads(json.dumps(row, default=str)) for row in rows],
        }
    return out
