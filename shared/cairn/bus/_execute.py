"""Running one command against one aggregate: load, decide, append, and on conflict reload.

On a single-replica stream the subject CAS is checked before dedup, so a retried command whose
first attempt succeeded gets "wrong last sequence", not "duplicate". A conflict therefore never
means "someone else won" by itself: the history is reloaded and searched for an event caused by
this command id; if one is there, the command already took effect and its original result is
returned. Otherwise the command is decided again on the fresh state (bounded, jittered).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from cairn.bus._store import EventStore, Recorded
from cairn.errors import ConcurrencyConflict
from cairn.proto.commands import Accepted
from cairn.proto.events import Envelope, Event

__all__ = ["CommandContext", "execute"]

Decide = Callable[[list[Recorded]], list[Event]]


class CommandContext:
    """Who sent a command and why: copied into every event envelope it causes."""

    __slots__ = ("actor", "command_id", "correlation_id", "workspace")

    def __init__(
        self, *, workspace: str, command_id: str, actor: str, correlation_id: str | None = None
    ) -> None:
        self.workspace = workspace
        self.command_id = command_id
        self.actor = actor
        self.correlation_id = correlation_id or command_id


def _envelopes(
    ctx: CommandContext, kind: str, aggregate_id: str, events: list[Event]
) -> list[Envelope[Event]]:
    now = datetime.now(UTC)
    return [
        Envelope(
            event_id=uuid.uuid4().hex,
            type=type(event).__name__,
            schema_version=type(event).VERSION,
            workspace=ctx.workspace,
            aggregate_kind=kind,
            aggregate_id=aggregate_id,
            timestamp=now,
            actor=ctx.actor,
            causation_id=ctx.command_id,
            correlation_id=ctx.correlation_id,
            data=event,
        )
        for event in events
    ]


def _already_done(history: list[Recorded], command_id: str) -> Recorded | None:
    caused = [r for r in history if r.envelope.causation_id == command_id]
    return caused[-1] if caused else None


async def execute(
    store: EventStore,
    ctx: CommandContext,
    *,
    kind: str,
    aggregate_id: str,
    subject: str,
    decide: Decide,
    attempts: int = 10,
) -> Accepted:
    """Decide ``decide(history)`` on the aggregate at ``subject`` and append what it returns.

    ``decide`` is pure: it folds the history and returns new events (none: nothing to do), or
    raises a ``CairnError`` that the caller sends back as an ``ErrorReply``.
    """
    for attempt in range(attempts):
        history = await store.read(subject)
        done = _already_done(history, ctx.command_id)
        if done is not None:
            return Accepted(
                command_id=ctx.command_id, aggregate_id=aggregate_id, seq=done.seq, replayed=True
            )
        events = decide(history)
        last = history[-1].seq if history else 0
        if not events:
            return Accepted(command_id=ctx.command_id, aggregate_id=aggregate_id, seq=last)
        envelopes = _envelopes(ctx, kind, aggregate_id, events)
        try:
            result = await store.append(
                subject, envelopes, expected_seq=last, msg_id=ctx.command_id
            )
        except ConcurrencyConflict:
            await asyncio.sleep(random.uniform(0, 0.005 * (2 ** min(attempt, 6))))
            continue
        return Accepted(
            command_id=ctx.command_id,
            aggregate_id=aggregate_id,
            seq=result.seq,
            replayed=result.duplicate,
        )
    raise ConcurrencyConflict(f"{subject}: gave up after {attempts} conflicting attempts")
