"""One pass over a stream through an ordered consumer (``cairn.bus.read_ordered``), against a
real nats-server: every message on the subjects once, in order, up to the stream's last
sequence when the read began; nothing at all for subjects without messages; the caller's
error raised, and no consumer left behind."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.msg import Msg

from cairn.bus import Connection, EventStore, read_ordered
from cairn.proto.streams import EVENTS
from cairn.proto.subjects import event as event_subject
from tests.helpers import envelope


async def _append(store: EventStore, ws: str, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        name = "e" + uuid.uuid4().hex[:8]
        done = await store.append(
            event_subject(ws, "experiment", name),
            [envelope(ws, name)],
            expected_seq=0,
            msg_id=uuid.uuid4().hex,
        )
        seqs.append(done.seq)
    return seqs


async def _consumers(conn: Connection) -> set[str]:
    return {info.name for info in await conn.js.consumers_info(EVENTS.name)}


async def test_every_message_of_the_subjects_once_in_order(
    conn: Connection, store: EventStore, ws_name: str
) -> None:
    other = ws_name + "x"
    mine = []
    for _ in range(3):  # interleaved with another workspace's events
        mine += await _append(store, ws_name, 2)
        await _append(store, other, 1)
    before = await _consumers(conn)
    got: list[tuple[int, str, str]] = []

    def take(seq: int, msg: Msg) -> None:
        got.append((seq, msg.subject, (msg.headers or {}).get("Nats-Msg-Id", "")))

    last = await read_ordered(conn, f"cairn.ev.{ws_name}.>", take, stream=EVENTS.name)
    assert [seq for seq, _, _ in got] == mine
    assert last == mine[-1]
    assert all(subject.startswith(f"cairn.ev.{ws_name}.") and msg_id for _, subject, msg_id in got)
    # from a later sequence on: only what follows it
    got.clear()
    await read_ordered(conn, f"cairn.ev.{ws_name}.>", take, stream=EVENTS.name, start=mine[3])
    assert [seq for seq, _, _ in got] == mine[3:]
    assert await _consumers(conn) <= before


async def test_subjects_without_messages_end_at_once(conn: Connection, store: EventStore) -> None:
    await _append(store, "someone", 1)  # the stream is not empty; the subjects are

    def take(seq: int, msg: Msg) -> None:
        raise AssertionError(f"nothing is on these subjects, got seq {seq}")

    empty = f"cairn.ev.nobody{uuid.uuid4().hex[:8]}.>"
    assert await read_ordered(conn, empty, take, stream=EVENTS.name) == 0


async def test_the_callers_error_stops_the_read_and_is_raised(
    conn: Connection, store: EventStore, ws_name: str
) -> None:
    seqs = await _append(store, ws_name, 3)
    seen: list[int] = []

    def take(seq: int, msg: Msg) -> None:
        seen.append(seq)
        if len(seen) == 2:
            raise ValueError("second")

    before = await _consumers(conn)
    with pytest.raises(ValueError, match="second"):
        await read_ordered(conn, f"cairn.ev.{ws_name}.>", take, stream=EVENTS.name)
    assert seen == seqs[:2]
    assert await _consumers(conn) <= before
