"""The async core of the event feed (``ws.events()``) and of webhooks (``ws.webhooks``).

``ws.events(types=[...], since=seq | datetime, durable="name")`` yields the workspace's events
as :class:`FeedEvent` s, oldest first, from pages of the ``events.read`` query (the webhooks
service answers it for members of the workspace only). A durable subscriber's position is
recorded in ``$CAIRN_HOME/feeds/<user>/<workspace>/<name>.json`` once the loop asks for the
next event (the one before has been handled), so a subscriber that dies and starts again gets
every event at least once: the last one it was handed may come again, with the same ``seq``
(deduplicate on it).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from cairn.errors import UnknownMessageType
from cairn.proto.commands import Accepted
from cairn.proto.events import Event, decode_envelope
from cairn.proto.feed import MAX_FEED_PAGE, ReadEvents, check_event_types
from cairn.proto.subjects import validate_token
from cairn.proto.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    ListDeadLetters,
    ListWebhooks,
    check_webhook_url,
)
from cairn.sdk._session import Session, new_id

__all__ = ["AsyncWebhooks", "FeedEvent", "feed", "feed_position"]


class FeedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the feed. ``seq`` is its stream sequence (unique, increasing: the key to
    deduplicate on); ``kind`` and ``entity_id`` name the entity (``run``/``r1``);
    ``command_id`` is the command that caused it (its ``causation_id``); ``event`` is the typed
    event (:mod:`cairn.proto.events`), None for a type this version of Cairn does not know
    (``raw`` holds it as JSON)."""

    seq: int
    time: datetime
    type: str
    schema_version: int
    workspace: str
    kind: str
    entity_id: str
    event_id: str
    actor: str
    command_id: str
    causation_id: str
    correlation_id: str
    subject: str
    event: Event | None
    raw: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON object: its coordinates and ``data`` (the event's body)."""
        return {
            "seq": self.seq,
            "time": self.time.isoformat(),
            "type": self.type,
            "schema_version": self.schema_version,
            "workspace": self.workspace,
            "kind": self.kind,
            "entity_id": self.entity_id,
            "event_id": self.event_id,
            "actor": self.actor,
            "command_id": self.command_id,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "data": msgspec.to_builtins(self.event) if self.event is not None else self.raw["data"],
        }


def _item(entry: dict[str, Any]) -> FeedEvent:
    raw: dict[str, Any] = entry["event"]
    event: Event | None
    try:
        envelope = decode_envelope(msgspec.json.encode(raw))
        event = envelope.data
        version = envelope.schema_version
    except UnknownMessageType:
        event, version = None, int(raw["schema_version"])
    return FeedEvent(
        seq=int(entry["seq"]),
        time=msgspec.convert(raw["timestamp"], datetime),
        type=raw["type"],
        schema_version=version,
        workspace=raw["workspace"],
        kind=raw["aggregate_kind"],
        entity_id=raw["aggregate_id"],
        event_id=raw["event_id"],
        actor=raw["actor"],
        command_id=raw["causation_id"],
        causation_id=raw["causation_id"],
        correlation_id=raw["correlation_id"],
        subject=entry["subject"],
        event=event,
        raw=raw,
    )


def feed_position(session: Session, durable: str) -> Path:
    """Where a durable subscriber's position is recorded."""
    user = session.settings.nats_user or os.environ.get("USER") or "anonymous"
    name = validate_token(durable, "durable subscriber name")
    return session.settings.home_path / "feeds" / user / session.name / f"{name}.json"


def _recorded(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["seq"])
    except FileNotFoundError:
        return None


def _record(path: Path, seq: int) -> None:
    """Write the position atomically (a crash leaves the old one or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seq": seq}))
    os.replace(tmp, path)


async def feed(
    session: Session,
    *,
    types: Iterable[str] = (),
    since: int | datetime | None = None,
    durable: str | None = None,
    follow: bool = True,
    poll_s: float = 0.5,
    page: int = 256,
) -> AsyncGenerator[FeedEvent, None]:
    """The events of ``session``'s workspace (see the module's docstring). ``since``: a
    stream sequence (events after it) or a moment (events from then on); a durable
    subscriber's recorded position wins over it. ``follow``: wait for new events at the end
    (polling every ``poll_s``), else stop there."""
    wanted = check_event_types(types)
    if isinstance(since, bool) or not isinstance(since, int | datetime | None):
        raise TypeError(f"since must be a stream sequence or a datetime, not {since!r}")
    path = feed_position(session, durable) if durable is not None else None
    position = since if isinstance(since, int) else 0
    moment = since if isinstance(since, datetime) else None
    recorded = _recorded(path) if path is not None else None
    if recorded is not None:
        position, moment = recorded, None
    limit = max(1, min(page, MAX_FEED_PAGE))
    while True:
        q = ReadEvents(after_seq=position, since=moment, types=wanted, limit=limit)
        data = (await session.client.ask(q)).data
        for entry in data["events"]:
            item = _item(entry)
            yield item  # the caller handles it and asks for the next one...
            position = item.seq
            if path is not None:  # ...so it is done: record it
                _record(path, position)
        scanned = int(data["scanned_to"])
        if scanned > position:
            position = scanned
            if path is not None:
                _record(path, position)
        if not data["events"] and scanned >= int(data["last_seq"]):
            if not follow:
                return
            await asyncio.sleep(poll_s)


class AsyncWebhooks:
    """``ws.webhooks``: each call is one command or query of the webhooks service."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def create(
        self,
        url: str,
        events: Iterable[str],
        *,
        secret: str,
        filters: dict[str, str] | None = None,
        description: str = "",
        webhook_id: str | None = None,
    ) -> str:
        """A new webhook's id: ``events`` (type names) of this workspace matching ``filters``
        POSTed to ``url``, signed with ``secret`` (kept sealed, never shown again)."""
        cmd = CreateWebhook(
            command_id=new_id(),
            webhook_id=webhook_id or new_id()[:16],
            url=check_webhook_url(url),
            event_types=check_event_types(events),
            filters=dict(filters or {}),
            secret=secret,
            description=description,
        )
        reply: Accepted = await self._session.send(cmd)
        return reply.aggregate_id

    async def list(self) -> builtins.list[dict[str, Any]]:
        rows: builtins.list[dict[str, Any]] = (await self._session.client.ask(ListWebhooks())).data
        return rows

    async def delete(self, webhook_id: str) -> None:
        await self._session.send(DeleteWebhook(command_id=new_id(), webhook_id=webhook_id))

    async def dead_letters(self, webhook_id: str | None = None) -> builtins.list[dict[str, Any]]:
        """The deliveries given up after every attempt failed, oldest first."""
        q = ListDeadLetters(webhook_id=webhook_id)
        rows: builtins.list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows
