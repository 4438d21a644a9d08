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
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from cairn.bus._connect import per_client
from cairn.bus._store import EventStore, Recorded
from cairn.errors import CairnError, ConcurrencyConflict
from cairn.proto.commands import Accepted
from cairn.proto.events import Envelope, Event

__all__ = ["AggregateCache", "CommandContext", "execute"]

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


class _Cached:
    """A cached history, the last event each command caused in it (to find a retried
    command's effect without a scan), and when it was last known to be the whole history
    (read from the log, or extended by an append the CAS accepted)."""

    __slots__ = ("caused", "checked", "history")

    def __init__(self, history: list[Recorded], caused: dict[str, Recorded]) -> None:
        self.history = history
        self.caused = caused
        self.checked = time.monotonic()


class AggregateCache:
    """Histories of recently used aggregates, per process (least recently used dropped).

    A cached history may be stale: another replica may have appended since. That is safe for
    writing, because the append carries the cached last sequence and the subject CAS refuses it
    if anything came after; ``execute`` then reads only the new events and decides again. Used
    for reading, a caller asks :meth:`refresh` for the events it has not seen.
    """

    @classmethod
    def shared(cls, store: EventStore) -> AggregateCache:
        """The cache of every service on ``store``'s connection and stream: the services of one
        process (``cairn up``) read an aggregate once, see each other's appends, and take turns
        writing it instead of meeting in CAS conflicts (a run is written by the scheduler, the
        tracking service and the artifact service alike)."""
        return per_client(store.conn, (cls, store.stream), lambda: cls(store))

    def __init__(self, store: EventStore, size: int = 10_000) -> None:
        self.store = store
        self.size = size
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, subject: str) -> asyncio.Lock:
        """One writer per aggregate in this process: concurrent commands on one aggregate take
        turns instead of racing each other into CAS conflicts (other processes still can, and
        the CAS still settles those)."""
        lock = self._locks.get(subject)
        if lock is None:
            lock = self._locks[subject] = asyncio.Lock()
        return lock

    def get(self, subject: str) -> list[Recorded] | None:
        entry = self._entries.get(subject)
        if entry is None:
            return None
        self._entries.move_to_end(subject)
        return entry.history

    def put(self, subject: str, history: list[Recorded]) -> None:
        """Cache ``history``, the aggregate's whole history as of now (read from the log, or
        extended by an append the CAS accepted); when it extends the cached one, only its new
        tail is indexed."""
        old = self._entries.get(subject)
        n = len(old.history) if old is not None else 0
        if old is not None and n <= len(history) and (n == 0 or history[n - 1] is old.history[-1]):
            caused, tail = old.caused, history[n:]
        else:
            caused, tail = {}, history
        for r in tail:
            caused[r.envelope.causation_id] = r
        self._entries[subject] = _Cached(history, caused)
        self._entries.move_to_end(subject)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def caused_by(self, subject: str, history: list[Recorded], command_id: str) -> Recorded | None:
        """The last event in ``history`` that ``command_id`` caused, if any."""
        entry = self._entries.get(subject)
        if entry is not None and entry.history is history:
            return entry.caused.get(command_id)
        return _already_done(history, command_id)

    async def read(
        self,
        subject: str,
        enough: Callable[[list[Recorded]], bool] | None = None,
        *,
        max_age_s: float | None = None,
    ) -> list[Recorded]:
        """The cached history when ``enough`` says it answers the question, else a refreshed
        one. Without ``max_age_s`` the answer must be a fact that cannot be undone ("this run
        exists", "this file was committed"); with it, one that may be undone but may be
        believed for that long after the history was last known to be whole ("this compute
        target exists"), as a name cache believes an entry until its time to live runs out."""
        entry = self._entries.get(subject)
        young = entry is not None and (
            max_age_s is None or time.monotonic() - entry.checked <= max_age_s
        )
        if entry is not None and young and enough is not None and enough(entry.history):
            self._entries.move_to_end(subject)
            return entry.history
        return await self.refresh(subject)

    async def refresh(self, subject: str) -> list[Recorded]:
        """The cached history plus whatever was appended since (all of it if not cached)."""
        history = self.get(subject)
        if history is None:
            history = await self.store.read(subject)
        else:
            after = history[-1].seq if history else 0
            history = history + await self.store.read(subject, after_seq=after)
        self.put(subject, history)
        return history


async def execute(
    store: EventStore,
    ctx: CommandContext,
    *,
    kind: str,
    aggregate_id: str,
    subject: str,
    decide: Decide,
    attempts: int = 10,
    cache: AggregateCache | None = None,
    new: bool = False,
) -> Accepted:
    """Decide ``decide(history)`` on the aggregate at ``subject`` and append what it returns.

    ``decide`` is pure: it folds the history and returns new events (none: nothing to do), or
    raises a ``CairnError`` that the caller sends back as an ``ErrorReply``. With a ``cache``,
    the first attempt decides on the cached history without reading (the CAS catches a stale
    one); a refusal or a conflict is only believed after a fresh read. ``new`` says the
    aggregate is almost surely new (its id was just made by the client): the first attempt
    decides on an empty history without reading, and the CAS (an empty subject expected)
    catches the rare one that exists, such as a retried command's.
    """
    if cache is None:
        return await _execute(store, ctx, kind, aggregate_id, subject, decide, attempts, None, new)
    async with cache.lock(subject):
        return await _execute(store, ctx, kind, aggregate_id, subject, decide, attempts, cache, new)


async def _execute(
    store: EventStore,
    ctx: CommandContext,
    kind: str,
    aggregate_id: str,
    subject: str,
    decide: Decide,
    attempts: int,
    cache: AggregateCache | None,
    new: bool,
) -> Accepted:
    cached = cache.get(subject) if cache is not None else None
    if cached is None and new:
        cached = []
    fresh = cached is None
    if cached is not None:
        history = cached
    else:
        history = await (cache.refresh(subject) if cache is not None else store.read(subject))
    for attempt in range(attempts):
        if cache is not None:
            done = cache.caused_by(subject, history, ctx.command_id)
        else:
            done = _already_done(history, ctx.command_id)
        if done is not None:  # in the log for good, cached or not: the command took effect
            return Accepted(
                command_id=ctx.command_id, aggregate_id=aggregate_id, seq=done.seq, replayed=True
            )
        try:
            events = decide(history)
            last = history[-1].seq if history else 0
            if not events:
                if not fresh:
                    raise ConcurrencyConflict("stale cache")
                return Accepted(command_id=ctx.command_id, aggregate_id=aggregate_id, seq=last)
            envelopes = _envelopes(ctx, kind, aggregate_id, events)
            result = await store.append(
                subject, envelopes, expected_seq=last, msg_id=ctx.command_id
            )
        except CairnError as exc:
            if fresh and not isinstance(exc, ConcurrencyConflict):
                raise  # decided on the log as it is: a real refusal
            if fresh:
                await asyncio.sleep(random.uniform(0, 0.005 * (2 ** min(attempt, 6))))
            history = (
                await cache.refresh(subject) if cache is not None else await store.read(subject)
            )
            fresh = True
            continue
        if cache is not None and not result.duplicate:
            first = result.seq - len(envelopes) + 1  # an atomic batch is stored contiguously
            cache.put(subject, history + [
                Recorded(first + i, subject, env) for i, env in enumerate(envelopes)
            ])  # fmt: skip
        return Accepted(
            command_id=ctx.command_id,
            aggregate_id=aggregate_id,
            seq=result.seq,
            replayed=result.duplicate,
        )
    raise ConcurrencyConflict(f"{subject}: gave up after {attempts} conflicting attempts")
