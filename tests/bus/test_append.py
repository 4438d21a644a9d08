"""The one append path against a real nats-server: CAS, idempotency, batches, limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cairn.bus import AggregateCache, CommandContext, Connection, EventStore, Recorded, execute
from cairn.bus._store import _raise_for
from cairn.domain import Aggregate
from cairn.errors import ConcurrencyConflict, InvalidInput, PayloadTooLarge, Unavailable
from cairn.proto.events import Event, ExperimentCreated, RunFailed, encode_envelope
from cairn.proto.subjects import event as event_subject
from tests.helpers import envelope


def _subject(ws_name: str) -> str:
    return event_subject(ws_name, "experiment", "agg")


def _counter(decided: list[int] | None = None, name: str | None = None) -> Aggregate[int, None]:
    """An aggregate whose state counts its events and whose one command appends an event
    named after that count (``name`` instead, when given); ``decided`` records each count
    decided on."""

    def decide(count: int, command: None) -> list[Event]:
        if decided is not None:
            decided.append(count)
        return [ExperimentCreated(experiment_id="agg", name=name or f"n{count}")]

    return Aggregate(
        kind="experiment",
        initial=0,
        evolve=lambda count, event: count + 1,
        decide=decide,
        commands=None,
    )


def _names(history: list[Recorded]) -> list[str]:
    return [r.envelope.data.name for r in history if isinstance(r.envelope.data, ExperimentCreated)]


async def test_twenty_concurrent_appenders_each_land_once_in_order(
    store: EventStore, ws_name: str
) -> None:
    subject = _subject(ws_name)

    async def one(i: int) -> int:
        ctx = CommandContext(workspace=ws_name, command_id=f"cmd{i}", actor="t")
        # a cache of its own each: twenty replicas, every conflict settled by the CAS
        accepted = await execute(
            ctx, counter, "agg", None, cache=AggregateCache(store), attempts=40
        )
        return accepted.seq

    counter = _counter()

    seqs = await asyncio.gather(*(one(i) for i in range(20)))
    history = await store.read(subject)
    assert sorted(r.envelope.causation_id for r in history) == sorted(f"cmd{i}" for i in range(20))
    assert [r.seq for r in history] == sorted(seqs)
    # each appender decided on the history it saw: event k was decided after exactly k events
    assert _names(history) == [f"n{k}" for k in range(20)]


async def test_retried_command_yields_one_event_and_the_same_reply(
    store: EventStore, ws_name: str
) -> None:
    subject = _subject(ws_name)
    ctx = CommandContext(workspace=ws_name, command_id="retry-me", actor="t")

    once = _counter(name="once")
    first = await execute(ctx, once, "agg", None, cache=AggregateCache(store))
    again = await execute(ctx, once, "agg", None, cache=AggregateCache(store))
    assert (again.seq, again.command_id) == (first.seq, first.command_id)
    assert again.replayed and not first.replayed
    assert len(await store.read(subject)) == 1


async def test_retry_with_stale_expected_sequence_is_a_conflict_not_a_duplicate(
    store: EventStore, ws_name: str
) -> None:
    """On R1 the CAS is checked before dedup: the raw retry is refused, and ``execute``
    resolves it by finding the command's own event."""
    subject = _subject(ws_name)
    first = await store.append(
        subject, [envelope(ws_name, "agg", cause="c1")], expected_seq=0, msg_id="c1"
    )
    with pytest.raises(ConcurrencyConflict):
        await store.append(
            subject, [envelope(ws_name, "agg", cause="c1")], expected_seq=0, msg_id="c1"
        )
    # same id with the current expected seq: inside the duplicate window, answered as duplicate
    dup = await store.append(
        subject, [envelope(ws_name, "agg", cause="c1")], expected_seq=first.seq, msg_id="c1"
    )
    assert dup.duplicate and dup.seq == first.seq
    ctx = CommandContext(workspace=ws_name, command_id="c1", actor="t")
    replay = await execute(ctx, _counter(name="x"), "agg", None, cache=AggregateCache(store))
    assert replay.replayed and replay.seq == first.seq
    assert len(await store.read(subject)) == 1


async def test_expected_zero_reserves_a_subject(store: EventStore, ws_name: str) -> None:
    subject = _subject(ws_name)
    await store.append(subject, [envelope(ws_name, "agg")], expected_seq=0, msg_id="a")
    with pytest.raises(ConcurrencyConflict):
        await store.append(subject, [envelope(ws_name, "agg")], expected_seq=0, msg_id="b")


async def test_atomic_batch_lands_whole_and_its_retry_is_resolved(
    store: EventStore, ws_name: str
) -> None:
    subject = _subject(ws_name)
    batch = [
        envelope(
            ws_name, "agg", ExperimentCreated(experiment_id="agg", name=f"b{i}"), cause="batch"
        )
        for i in range(3)
    ]
    result = await store.append(subject, batch, expected_seq=0, msg_id="batch")
    history = await store.read(subject)
    assert _names(history) == ["b0", "b1", "b2"]
    assert history[-1].seq == result.seq
    with pytest.raises(ConcurrencyConflict):  # 10201 (repeated msg ids) or 10071
        await store.append(subject, batch, expected_seq=result.seq, msg_id="batch")
    # a batch with a wrong expected sequence stores nothing at all
    with pytest.raises(ConcurrencyConflict):
        await store.append(subject, batch, expected_seq=1, msg_id="other")
    assert len(await store.read(subject)) == 3


async def test_oversized_event_is_refused_before_publishing(
    store: EventStore, ws_name: str
) -> None:
    subject = _subject(ws_name)
    big = envelope(ws_name, "agg", RunFailed(run_id="r", error="x" * 16384))
    # shrink the limit below the event size rather than build a huge Text field
    small = EventStore(store.conn)
    small.max_bytes = 1000
    with pytest.raises(PayloadTooLarge):
        await small.append(subject, [big], expected_seq=0, msg_id="big")
    assert await store.read(subject) == []


async def test_reads_page_through_long_histories(store: EventStore, ws_name: str) -> None:
    subject = _subject(ws_name)
    reader = EventStore(store.conn, read_batch=16)
    await asyncio.gather(
        *(
            store.append(
                subject,
                [envelope(ws_name, "agg", cause=f"p{i}")],
                expected_seq=None,
                msg_id=f"p{i}",
            )
            for i in range(50)
        )
    )
    history = await reader.read(subject)
    assert len(history) == 50
    assert [r.seq for r in history] == sorted(r.seq for r in history)
    middle = history[20].seq
    assert [r.seq for r in await reader.read(subject, after_seq=middle)] == [
        r.seq for r in history[21:]
    ]
    assert [r.seq for r in await reader.read(subject, up_to_seq=middle)] == [
        r.seq for r in history[:21]
    ]


async def test_unrelated_subjects_do_not_interfere(store: EventStore, ws_name: str) -> None:
    a, b = event_subject(ws_name, "experiment", "a"), event_subject(ws_name, "experiment", "b")
    await store.append(a, [envelope(ws_name, "a")], expected_seq=0, msg_id=uuid.uuid4().hex)
    await store.append(b, [envelope(ws_name, "b")], expected_seq=0, msg_id=uuid.uuid4().hex)
    assert [r.subject for r in await store.read(a)] == [a]


async def test_concurrent_commands_through_the_cache(store: EventStore, ws_name: str) -> None:
    """Concurrent commands on one aggregate through an AggregateCache take turns: each lands
    once, in decision order, each reply names its own event, and a command id sent twice takes
    effect once."""
    cache = AggregateCache(store)
    subject = _subject(ws_name)
    counter = _counter()

    async def one(cmd: str) -> int:
        ctx = CommandContext(workspace=ws_name, command_id=cmd, actor="t")
        return (await execute(ctx, counter, "agg", None, cache=cache)).seq

    cmds = [f"g{i}" for i in range(30)] + ["g3", "g7"]  # two retries of earlier commands
    seqs = await asyncio.gather(*(one(c) for c in cmds))
    history = await store.read(subject)
    assert sorted(r.envelope.causation_id for r in history) == sorted(set(cmds))
    assert _names(history) == [f"n{k}" for k in range(30)]
    by_cause = {r.envelope.causation_id: r.seq for r in history}
    assert [by_cause[c] for c in cmds] == list(seqs)
    assert len({r.seq for r in history}) == 30
    # a second cache (another replica) with a stale view still appends correctly
    other = AggregateCache(store)
    other.put(subject, history[:5])
    ctx = CommandContext(workspace=ws_name, command_id="late", actor="t")
    late = await execute(ctx, counter, "agg", None, cache=other)
    final = await store.read(subject)
    assert final[-1].seq == late.seq and _names(final)[-1] == "n30"


async def test_services_of_one_connection_share_one_cache(
    conn: Connection, store: EventStore, ws_name: str
) -> None:
    """Services in one process (each with its own EventStore on the process's connection) get
    one aggregate cache: what one appends, the next decides on without a conflict or a read."""
    tracking, artifacts = EventStore(conn), EventStore(conn)
    cache = AggregateCache.shared(tracking)
    assert AggregateCache.shared(artifacts) is cache
    subject = _subject(ws_name)
    decided: list[int] = []
    counter = _counter(decided)

    for i, service in enumerate((tracking, artifacts, tracking)):
        ctx = CommandContext(workspace=ws_name, command_id=f"{ws_name}-s{i}", actor="t")
        await execute(ctx, counter, "agg", None, cache=AggregateCache.shared(service))
    assert decided == [0, 1, 2]  # each decided once, on the history as it was
    causes = [r.envelope.causation_id for r in await store.read(subject)]
    assert causes == [f"{ws_name}-s{i}" for i in range(3)]


class _CountingStore(EventStore):
    """A real store that counts its reads."""

    reads = 0

    async def read(
        self,
        subject: str,
        *,
        after_seq: int = 0,
        up_to_seq: int | None = None,
        complete: bool = False,
    ) -> list[Recorded]:
        self.reads += 1
        return await super().read(
            subject, after_seq=after_seq, up_to_seq=up_to_seq, complete=complete
        )


async def test_a_new_aggregate_is_decided_without_a_read_and_an_existing_one_is_caught(
    conn: Connection, ws_name: str
) -> None:
    """``new=True``: the first command decides on an empty history without reading; on a
    subject that has events (another replica's cache, a retried command) the CAS refuses the
    guess, the history is read, and the command is decided again or found done."""
    store = _CountingStore(conn)
    subject = _subject(ws_name)
    decided: list[int] = []
    counter = _counter(decided)

    async def send(command_id: str, cache: AggregateCache) -> bool:
        # ids unique to the test: message ids are deduplicated across the whole stream
        ctx = CommandContext(workspace=ws_name, command_id=f"{ws_name}-{command_id}", actor="t")
        accepted = await execute(ctx, counter, "agg", None, cache=cache, new=True)
        return accepted.replayed

    assert not await send("first", AggregateCache(store))
    assert (decided, store.reads) == ([0], 0)
    assert not await send("second", AggregateCache(store))  # a cache that never saw "first"
    assert decided == [0, 0, 1] and store.reads == 1
    assert await send("first", AggregateCache(store))  # a retry: found, not decided again
    assert decided == [0, 0, 1, 0]
    history = await store.read(subject)
    assert [r.envelope.causation_id for r in history] == [f"{ws_name}-first", f"{ws_name}-second"]


async def test_a_cached_answer_is_believed_only_while_it_is_young_enough(
    conn: Connection, ws_name: str
) -> None:
    store = _CountingStore(conn)
    cache = AggregateCache(store)
    subject = _subject(ws_name)
    await store.append(subject, [envelope(ws_name, "agg")], expected_seq=0, msg_id=uuid.uuid4().hex)
    assert len(await cache.refresh(subject)) == 1 and store.reads == 1
    assert len(await cache.read(subject, lambda h: bool(h), max_age_s=60)) == 1
    assert store.reads == 1  # young and enough: no read
    await cache.read(subject, lambda h: not h, max_age_s=60)
    assert store.reads == 2  # not enough: read again
    await asyncio.sleep(0.05)
    await cache.read(subject, lambda h: bool(h), max_age_s=0.01)
    assert store.reads == 3  # too old: read again


async def test_a_command_folds_only_the_events_it_has_not_folded(
    store: EventStore, ws_name: str
) -> None:
    """The cache keeps the folded state with the history: commands through one cache fold
    each event once, also events another replica appended (read as the history's new tail);
    a history the cache does not hold is folded whole."""
    folded: list[str] = []

    def evolve(count: int, event: Event) -> int:
        assert isinstance(event, ExperimentCreated)
        folded.append(event.name)
        return count + 1

    def decide(count: int, command: None) -> list[Event]:
        return [ExperimentCreated(experiment_id="agg", name=f"n{count}")]

    counter = Aggregate(kind="experiment", initial=0, evolve=evolve, decide=decide, commands=None)
    cache, other = AggregateCache(store), AggregateCache(store)

    async def send(cache: AggregateCache, command_id: str) -> None:
        ctx = CommandContext(workspace=ws_name, command_id=f"{ws_name}-{command_id}", actor="t")
        await execute(ctx, counter, "agg", None, cache=cache)

    for i in range(5):
        await send(cache, f"a{i}")
    assert folded == ["n0", "n1", "n2", "n3"]  # n4 is not folded until a command needs it
    await send(other, "b")  # another replica: reads the five, folds them, appends n5
    folded.clear()
    await send(cache, "c")  # stale: the CAS refuses; only the new tail (n4, n5) is folded
    assert folded == ["n4", "n5"]
    history = await store.read(_subject(ws_name))
    assert _names(history) == [f"n{k}" for k in range(7)]
    folded.clear()
    assert AggregateCache(store).state(_subject(ws_name), counter, history) == 7
    assert len(folded) == 7


async def test_a_cas_against_a_wildcard_sees_every_subject_under_it(
    store: EventStore, ws_name: str
) -> None:
    """``expected_subject``: the sequence expected is the last of all the messages under it,
    so a message on another subject of the same space in between is a conflict."""
    space = f"cairn.ev.{ws_name}.>"
    first = event_subject(ws_name, "experiment", "a")
    other = event_subject(ws_name, "experiment", "b")
    payload = encode_envelope(envelope(ws_name, "a"))
    done = await store.publish(
        first, payload, msg_id=f"{ws_name}-w1", expected_seq=0, expected_subject=space
    )
    other_payload = encode_envelope(envelope(ws_name, "b"))
    await store.publish(other, other_payload, msg_id=f"{ws_name}-w2", expected_seq=0)
    with pytest.raises(ConcurrencyConflict):  # the first subject's own last is still `done`
        await store.publish(
            first, payload, msg_id=f"{ws_name}-w3", expected_seq=done.seq, expected_subject=space
        )
    last = (await store.read_stored(other))[-1].seq
    again = await store.publish(
        first, payload, msg_id=f"{ws_name}-w4", expected_seq=last, expected_subject=space
    )
    assert again.seq > last and not again.duplicate
    # the subjects of a CAS without the sequence it expects: refused, nothing stored
    with pytest.raises(InvalidInput, match="give expected_seq"):
        await store.publish(first, payload, msg_id=f"{ws_name}-w5", expected_subject=space)
    assert (await store.read_stored(first))[-1].seq == again.seq


def test_a_server_without_a_leader_now_is_unavailable_not_internal() -> None:
    """err 10008 ("JetStream system temporarily unavailable", during an election) answered to a
    read or an append is ``Unavailable``: callers retry it; it is no internal error."""
    error = {
        "err_code": 10008,
        "code": 503,
        "description": "JetStream system temporarily unavailable",
    }
    with pytest.raises(Unavailable, match="err 10008"):
        _raise_for(error, "cairn.ev.w.run.r")
