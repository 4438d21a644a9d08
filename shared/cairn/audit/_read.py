"""Stored messages as the server hands them out, bytes untouched: batched direct gets
(ADR-31) over a subject filter, with each message's sequence, subject and ``Nats-Msg-Id``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from nats.errors import TimeoutError as NatsTimeout

from cairn.audit._chain import RawEvent
from cairn.bus import Connection
from cairn.bus._store import TRANSIENT
from cairn.errors import CairnError, Unavailable
from cairn.proto.streams import EVENTS

__all__ = ["MAX_BATCH_BYTES", "read_batch", "read_raw"]

MAX_BATCH_BYTES = 4 * 1024 * 1024


async def read_batch(
    conn: Connection, subjects: str, start: int, batch: int = 256, stream: str = EVENTS.name
) -> tuple[list[RawEvent], bool]:
    """Up to ``batch`` messages on ``subjects`` from sequence ``start`` on, and whether more
    were pending when the server answered."""
    nc, timeout = conn.nc, conn.settings.request_timeout
    body: dict[str, Any] = {
        "seq": start,
        "next_by_subj": subjects,
        "batch": batch,
        "max_bytes": MAX_BATCH_BYTES,  # events may be 256 KiB each: bound one answer
    }
    inbox = nc.new_inbox()
    try:
        sub = await nc.subscribe(inbox)
    except TRANSIENT as exc:
        raise Unavailable(f"cannot read {stream}: {exc!r}") from exc
    got: list[RawEvent] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), reply=inbox)
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except NatsTimeout as exc:
                raise Unavailable(f"direct get on {stream} timed out") from exc
            headers = msg.headers or {}
            status = headers.get("Status")
            if status == "404":
                return got, False
            if status == "204":
                return got, int(headers.get("Nats-Num-Pending", "0")) > 0
            if status:
                raise CairnError(f"direct get failed: {status} {headers.get('Description')}")
            got.append(
                RawEvent(
                    int(headers["Nats-Sequence"]),
                    headers["Nats-Subject"],
                    headers.get("Nats-Msg-Id", ""),
                    msg.data,
                )
            )
    except TRANSIENT as exc:
        raise Unavailable(f"direct get on {stream} failed: {exc!r}") from exc
    finally:
        try:
            await sub.unsubscribe()
        except TRANSIENT:
            pass


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
