"""The public event feed: a person reads the events of a workspace they are a member of.

People have no JetStream of their own, and subject permissions cannot narrow a consumer to one
workspace (docs/security.md), so the feed is a query: ``ReadEvents`` on
``cairn.q.<ws>.events.read``, answered by the webhooks service after the membership gate
admitted the asker. It returns one page of the workspace's events after a stream sequence (or
from a moment), optionally of some types only; the caller keeps its position (the SDK's
``ws.events()`` does, and records it for a durable subscriber).

A page's ``data`` is ``{"events": [{"seq": int, "subject": str, "event": envelope}, ...],
"scanned_to": int, "last_seq": int}``: each envelope is the stored event as JSON (sealed
values replaced by ``"<sealed>"``), ``scanned_to`` the position to ask after next (it moves
past events of other types too), ``last_seq`` the stream's last sequence when answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

import msgspec

from cairn.proto._base import Count
from cairn.proto.commands import Query
from cairn.proto.errors import UnknownEventType
from cairn.proto.events import EVENT_TYPES

__all__ = [
    "FEED_QUERY_TYPES",
    "MAX_FEED_PAGE",
    "SEALED",
    "ReadEvents",
    "check_event_types",
    "redact",
]

#: the most events one page holds
MAX_FEED_PAGE = 1000
#: what stands in the feed (and in webhook deliveries) for a sealed value
SEALED = "<sealed>"

EventTypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ReadEvents(Query, frozen=True, kw_only=True, tag=True):
    """One page of the workspace's events with a stream sequence above ``after_seq`` (and,
    with ``since``, stored at or after that moment), of ``types`` only when given, at most
    ``limit`` of them, oldest first."""

    NAME = "events.read"
    after_seq: Count = 0
    since: datetime | None = None
    types: Annotated[tuple[EventTypeName, ...], msgspec.Meta(max_length=64)] = ()
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_FEED_PAGE)] = 256


FEED_QUERY_TYPES: tuple[type[Query], ...] = (ReadEvents,)


def check_event_types(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` (in order, once each) if every one is a published event type, else
    ``UnknownEventType`` naming the unknown ones and listing the valid ones."""
    wanted = tuple(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in EVENT_TYPES]
    if unknown:
        raise UnknownEventType(
            f"unknown event type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
            f" the event types are: {', '.join(sorted(EVENT_TYPES))}"
        )
    return wanted


def redact(value: Any) -> Any:
    """``value`` (an event's JSON) with every field whose name holds ``sealed`` replaced by
    ``SEALED`` (a value sealed under the workspace key never leaves the services)."""
    if isinstance(value, dict):
        return {
            k: (SEALED if "sealed" in k and v is not None else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
