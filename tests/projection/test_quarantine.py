"""No event stops a projection for good: one it cannot apply is quarantined with its error, the
read model moves on, and a retry after a fix applies it."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from cairn.bus import Connection, EventStore
from cairn.errors import NotFound
from cairn.projection import (
    Delivered,
    ProjectionRunner,
    Tables,
    events_of,
    read_model_states,
    retry_quarantined,
)
from tests.helpers import envelope


class _Picky:
    """Writes a row per experiment event, then fails for the names in ``refuse`` (after its
    write, so a quarantined event must leave none of its writes behind)."""

    version = 1
    tables = ("seen",)

    def __init__(self) -> None:
        self.name = f"picky_{uuid.uuid4().hex[:8]}"
        self.source = events_of("experiment")
        self.refuse: set[str] = set()

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('seen')} (seq INTEGER, name TEXT)")

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Any]) -> None:
        name = item.subject.rsplit(".", 1)[1]
        db.execute(f"INSERT INTO {t('seen')} VALUES (?, ?)", (item.seq, name))
        if name in self.refuse:
            raise ValueError(f"cannot apply {name}")


def _names(runner: ProjectionRunner[Any], ws: str) -> list[str]:
    rows, _ = runner.read(
        lambda db, t: db.execute(f"SELECT name FROM {t('seen')} ORDER BY seq").fetchall()
    )
    return [name for (name,) in rows if name.startswith(ws)]


def _quarantined(runner: ProjectionRunner[Any], ws: str) -> list[dict[str, Any]]:
    """This test's quarantined events (the session's stream holds other tests' garbage)."""
    events: list[dict[str, Any]] = runner.state(events=10_000)["events"]
    return sorted(
        (e for e in events if e["subject"].startswith(f"cairn.ev.{ws}.")), key=lambda e: e["seq"]
    )


async def _append(store: EventStore, ws: str, name: str) -> int:
    subject = f"cairn.ev.{ws}.experiment.{name}"
    result = await store.append(subject, [envelope(ws, name)], expected_seq=0, msg_id=name)
    return result.seq


async def test_an_event_that_cannot_be_applied_is_quarantined_and_retried_after_a_fix(
    conn: Connection, store: EventStore, tmp_path: Path, ws_name: str
) -> None:
    projection = _Picky()
    good, bad, later = f"{ws_name}a", f"{ws_name}b", f"{ws_name}c"
    projection.refuse.add(bad)
    runner = ProjectionRunner(conn, tmp_path / "q.sqlite", projection, batch_size=50)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _append(store, ws_name, good)
        bad_seq = await _append(store, ws_name, bad)
        garbage = await conn.js.publish(f"cairn.ev.{ws_name}.experiment.junk", b"{not json")
        last = await _append(store, ws_name, later)
        assert await runner.wait_for(last, timeout=15) >= last  # it went on past both
        assert _names(runner, ws_name) == [good, later]  # the bad one left no row behind
        events = _quarantined(runner, ws_name)
        assert [(e["seq"], e["error"].split(":")[0]) for e in events] == [
            (bad_seq, "ValueError"),
            (garbage.seq, "DecodeError"),
        ]
        assert f"cannot apply {bad}" in events[0]["error"]
        before = runner.quarantined

        # asked over NATS, as `cairn status` asks
        states = [s for s in await read_model_states(conn) if s["read_model"] == projection.name]
        assert [s["quarantined"] for s in states] == [before]

        projection.refuse.clear()  # the fix
        (result,) = await retry_quarantined(conn, projection.name, timeout=15)
        assert (result["retried"], result["applied"]) == (before, 1)
        assert result["quarantined"] == before - 1 == runner.quarantined
        assert _names(runner, ws_name) == [good, bad, later]  # its row, at its sequence
        assert [e["seq"] for e in _quarantined(runner, ws_name)] == [garbage.seq]  # malformed
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_retry_of_an_unknown_read_model_is_refused_by_name(conn: Connection) -> None:
    try:
        await retry_quarantined(conn, "no-such-model", timeout=2)
    except NotFound as exc:
        assert "no-such-model" in exc.message
    else:
        raise AssertionError("a retry of an unknown read model was accepted")


async def test_a_rebuild_keeps_only_its_own_quarantine(
    conn: Connection, store: EventStore, tmp_path: Path, ws_name: str
) -> None:
    projection = _Picky()
    bad = f"{ws_name}x"
    projection.refuse.add(bad)
    runner = ProjectionRunner(conn, tmp_path / "r.sqlite", projection)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        seq = await _append(store, ws_name, bad)
        await runner.wait_for(seq, timeout=15)
        assert [e["seq"] for e in _quarantined(runner, ws_name)] == [seq]
        before = runner.quarantined
        await runner.rebuild()  # still failing: quarantined again, in the new generation only
        assert [e["seq"] for e in _quarantined(runner, ws_name)] == [seq]
        (rows,) = runner.db.execute("SELECT COUNT(*) FROM projection_quarantine").fetchone()
        assert rows == runner.quarantined == before
        projection.refuse.clear()
        await runner.rebuild()
        assert _quarantined(runner, ws_name) == [] and _names(runner, ws_name) == [bad]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
