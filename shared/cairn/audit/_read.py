"""Stored messages as the server hands them out, bytes untouched: batched direct gets
(ADR-31) over a subject filter, with each message's sequence, subject and ``Nats-Msg-Id``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cairn.audit._chain import RawEvent
from cairn.bus import Connection, EventStore
from cairn.proto.streams import EVENTS

__all__ = ["MAX_BATCH_BYTES", "read_batch", "read_raw"]

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
