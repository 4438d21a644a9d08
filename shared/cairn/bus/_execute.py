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
from typing import Any, TypeVar

from cairn.bus._connect import per_client
from cairn.bus._store import EventStore, Recorded
from cairn.domain import Aggregate
from cairn.errors import CairnError, ConcurrencyConflict
from cairn.proto import subjects
from cairn.proto.commands import Accepted
from cairn.proto.events import Envelope, Event

__all__ = ["AggregateCache", "CommandContext", "execute", "replayed"]

S = TypeVar("S")
C = TypeVar("C")


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


class _Folded:
    """An aggregate's state after the first ``n`` events of a cached history."""

    __slots__ = ("aggregate", "n", "state")

    def __init__(self, aggregate: Aggregate[Any, Any], n: int, state: Any) -> None:
        self.aggregate = aggregate
        self.n = n
        self.state: Any = state


class _Cached:
    """A cached history, the last event each command caused in it (to find a retried
    command's effect without a scan), when it was last known to be the whole history
    (read from the log, or extended by an append the CAS accepted), and the state folded
    from a prefix of it (a command folds only the events after that prefix)."""

    __slots__ = ("caused", "checked", "folded", "history")

    def __init__(
        self, history: list[Recorded], caused: dict[str, Recorded], folded: _Folded | None
    ) -> None:
        self.history = history
        self.caused = caused
        self.folded = folded
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
        folded: _Folded | None = None
        if old is not None and n <= len(history) and (n == 0 or history[n - 1] is old.history[-1]):
            caused, tail, folded = old.caused, history[n:], old.folded
        else:
            caused, tail = {}, history
        for r in tail:
            caused[r.envelope.causation_id] = r
        self._entries[subject] = _Cached(history, caused, folded)
        self._entries.move_to_end(subject)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def state(self, subject: str, aggregate: Aggregate[S, Any], history: list[Recorded]) -> S:
        """``aggregate``'s state after ``history``. When ``history`` is the cached one, the
        state folded for it before is kept with it and only the events after that are folded
        (a model with thousands of versions is not refolded per command)."""
        entry = self._entries.get(subject)
        if entry is None or entry.history is not history:
            return aggregate.fold(r.envelope.data for r in history)
        folded = entry.folded
        state: S
        if folded is not None and folded.aggregate is aggregate and folded.n <= len(history):
            state = folded.state
            if folded.n < len(history):
                state = aggregate.fold((r.envelope.data for r in history[folded.n :]), onto=state)
        else:
            state = aggregate.fold(r.envelope.data for r in history)
        entry.folded = _Folded(aggregate, len(history), state)
        return state

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

    async def refresh(self, subject: str, *, complete: bool = False) -> list[Recorded]:
        """The cached history plus whatever was appended since (all of it if not cached).
        ``complete``: everything the stream leader has (a follower that answers a read may
        be behind), for a refusal, which must not rest on a stale read."""
        history = self.get(subject)
        if history is None:
            history = await self.store.read(subject, complete=complete)
        else:
            after = history[-1].seq if history else 0
            history = history + await self.store.read(subject, after_seq=after, complete=complete)
        self.put(subject, history)
        return history


async def execute(
    ctx: CommandContext,
    aggregate: Aggregate[Any, C],
    aggregate_id: str,
    command: C,
    *,
    cache: AggregateCache,
    new: bool = False,
    attempts: int = 10,
) -> Accepted:
    """Decide ``command`` on aggregate ``aggregate_id`` (of ``ctx.workspace``) and append the
    events ``aggregate.decide`` returns, under ``ctx``'s command id.

    ``decide`` is pure: it returns new events (none: nothing to do), or raises a
    ``CairnError`` that the caller sends back as an ``ErrorReply``. The first attempt decides
    on the cached history without reading (the CAS catches a stale one); a refusal or a
    conflict is only believed after a fresh read. ``new`` says the aggregate is almost surely
    new (its id was just made by the client): the first attempt decides on an empty history
    without reading, and the CAS (an empty subject expected) catches the rare one that exists,
    such as a retried command's. Commands on one aggregate take turns per ``cache``.
    """
    subject = subjects.event(ctx.workspace, aggregate.kind, aggregate_id)
    async with cache.lock(subject):
        return await _Execution(ctx, aggregate, aggregate_id, subject, cache).run(
            command, new, attempts
        )


async def replayed(
    ctx: CommandContext, kind: str, aggregate_id: str, cache: AggregateCache
) -> Accepted | None:
    """``Accepted`` (replayed) when the log holds what ``ctx``'s command caused on the
    aggregate, read fresh; else None. For a command whose checks before ``execute`` failed:
    a copy sent again after its first was accepted (its reply lost) is answered as the replay
    it is, even when what it names has changed or gone since."""
    subject = subjects.event(ctx.workspace, kind, aggregate_id)
    history = await cache.refresh(subject)
    done = cache.caused_by(subject, history, ctx.command_id)
    if done is None:
        return None
    return Accepted(
        command_id=done.envelope.causation_id,
        aggregate_id=aggregate_id,
        seq=done.seq,
        replayed=True,
    )


class _Execution:
    __slots__ = ("aggregate", "aggregate_id", "cache", "ctx", "subject")

    def __init__(
        self,
        ctx: CommandContext,
        aggregate: Aggregate[Any, Any],
        aggregate_id: str,
        subject: str,
        cache: AggregateCache,
    ) -> None:
        self.ctx, self.aggregate, self.aggregate_id = ctx, aggregate, aggregate_id
        self.subject, self.cache = subject, cache

    def accepted(self, seq: int, replayed: bool = False) -> Accepted:
        return Accepted(
            command_id=self.ctx.command_id,
            aggregate_id=self.aggregate_id,
            seq=seq,
            replayed=replayed,
        )

    async def run(self, command: object, new: bool, attempts: int) -> Accepted:
        cache, subject = self.cache, self.subject
        history = cache.get(subject)
        if history is None and new:
            history = []
        fresh = history is None
        if history is None:
            history = await cache.refresh(subject)
        confirmed = False  # the history read is all the stream leader has
        for attempt in range(attempts):
            done = cache.caused_by(subject, history, self.ctx.command_id)
            if done is not None:  # in the log for good, cached or not: the command took effect
                return self.accepted(done.seq, replayed=True)
            try:
                return await self.once(history, command, fresh)
            except CairnError as exc:
                refused = not isinstance(exc, ConcurrencyConflict)
                if fresh and refused and confirmed:
                    raise  # decided on the log as it is: a real refusal
                if fresh and not refused:
                    await asyncio.sleep(random.uniform(0, 0.005 * (2 ** min(attempt, 6))))
                # a refusal is believed only on the whole history: the replica that answered
                # the read may be behind the stream leader
                history = await cache.refresh(subject, complete=refused)
                confirmed = confirmed or refused
                fresh = True
        raise ConcurrencyConflict(f"{subject}: gave up after {attempts} conflicting attempts")

    async def once(self, history: list[Recorded], command: object, fresh: bool) -> Accepted:
        """Decide on ``history`` and append; ``ConcurrencyConflict`` when the CAS refuses."""
        state = self.cache.state(self.subject, self.aggregate, history)
        events = self.aggregate.decide(state, command)
        last = history[-1].seq if history else 0
        if not events:
            if not fresh:
                raise ConcurrencyConflict("stale cache")
            return self.accepted(last)
        envelopes = _envelopes(self.ctx, self.aggregate.kind, self.aggregate_id, events)
        result = await self.cache.store.append(
            self.subject, envelopes, expected_seq=last, msg_id=self.ctx.command_id
        )
        if not result.duplicate:
            first = result.seq - len(envelopes) + 1  # an atomic batch is stored contiguously
            appended = [Recorded(first + i, self.subject, e) for i, e in enumerate(envelopes)]
            self.cache.put(self.subject, history + appended)
        return self.accepted(result.seq, replayed=result.duplicate)
