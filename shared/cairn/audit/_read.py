"""Stored messages as the server hands them out, bytes untouched, with each message's
sequence, subject and ``Nats-Msg-Id``: batched direct gets (ADR-31) over a subject filter,
from any position and without consumer state (the audit service follows the log this way),
or one pass of an ordered consumer (:func:`read_in_order`: ``cairn audit verify``, which
reads the whole log once, 2-3x faster; docs/benchmarks.md, *Replay*)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from nats.aio.msg import Msg

from cairn.audit._chain import RawEvent
from cairn.bus import Connection, EventStore, read_ordered
from cairn.proto.streams import EVENTS

__all__ = ["MAX_BATCH_BYTES", "read_batch", "read_in_order", "read_raw"]

MAX_BATCH_BYTES = 4 * 1024 * 1024


async def read_batch(
    conn: Connection, subjects: str, start: int, batch: int = 256, stream: str = EVENTS.name
) -> tuple[list[RawEvent], bool]:
    """Up to ``batch`` messages on ``subjects`` from sequence ``start`` on, and whether more
    were pending when the server answered (events may be 256 KiB each: one answer is bounded
    to ``MAX_BATCH_BYTES``)."""
    got, more = await EventStore(conn, stream=stream).batch(
        subjects, start, limit=batch, max_bytes=MAX_BATCH_BYTES
    )
    return [RawEvent(m.seq, m.subject, m.msg_id, m.data) for m in got], more


async def read_raw(
    conn: Connection, subjects: str, start: int = 1, *, stream: str = EVENTS.name
) -> AsyncIterator[RawEvent]:
    """Every message on ``subjects`` from ``start`` to the end of the stream as it is while
    reading, oldest first."""
    while True:
        got, more = await read_batch(conn, subjects, start, stream=stream)
        for event in got:
            yield event
        if not got or not more:
            return
        start = got[-1].seq + 1


async def read_in_order(
    conn: Connection,
    subjects: str,
    on_event: Callable[[RawEvent], None],
    *,
    stream: str = EVENTS.name,
) -> int:
    """Hand every message on ``subjects`` to ``on_event``, oldest first, up to the stream's
    last sequence when the read began, through an ordered consumer
    (:func:`cairn.bus.read_ordered`); the sequence of the last one (0 when none)."""

    def take(seq: int, msg: Msg) -> None:
        headers = msg.headers
        msg_id = headers.get("Nats-Msg-Id", "") if headers else ""
        on_event(RawEvent(seq, msg.subject, msg_id, msg.data))

    return await read_ordered(conn, subjects, take, stream=stream)
