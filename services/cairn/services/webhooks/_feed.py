"""The event feed (``events.read``): one page of a workspace's events, for its members.

The responder's membership gate has admitted the asker before this runs, and the subject
filter is built from the request's workspace (``cairn.ev.<ws>.>``), so a page never holds
another workspace's events. Sealed values are replaced by ``"<sealed>"``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from cairn.bus import EventStore
from cairn.proto import subjects
from cairn.proto.commands import QueryResult
from cairn.proto.events import Envelope
from cairn.proto.feed import ReadEvents, check_event_types, redact
from cairn.rpc import Request

__all__ = ["MAX_PAGE_BYTES", "read_events"]

#: a page's events stop before their stored size passes this (a reply must stay well below
#: the server's 1 MiB payload limit)
MAX_PAGE_BYTES = 512 * 1024

_head = msgspec.json.Decoder(Envelope[msgspec.Raw])


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def read_events(store: EventStore, req: Request) -> QueryResult:
    q: ReadEvents = req.body
    types = check_event_types(q.types)
    wanted = set(types)
    since = _utc(q.since) if q.since is not None else None
    start = None
    if since is not None and q.after_seq == 0:
        start = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # the stream's end before the read: every matching event up to it is in a whole page
    last = await store.last_seq()
    page = await store.page(
        subjects.events_of_workspace(req.workspace),
        after_seq=q.after_seq,
        start_time=start,
        limit=q.limit,
    )
    events: list[dict[str, Any]] = []
    size, scanned_to, whole = 0, q.after_seq, len(page) < q.limit
    for seq, subject, payload in page:
        if events and size + len(payload) > MAX_PAGE_BYTES:
            whole = False
            break
        scanned_to = seq
        head = _head.decode(payload)
        if wanted and head.type not in wanted:
            continue
        if since is not None and _utc(head.timestamp) < since:
            continue
        size += len(payload)
        event = redact(msgspec.json.decode(payload))
        events.append({"seq": seq, "subject": subject, "event": event})
    if whole:  # nothing more of this workspace (and these types) up to ``last``
        scanned_to = max(scanned_to, last)
    return QueryResult(
        seq=last, data={"events": events, "scanned_to": scanned_to, "last_seq": last}
    )
