"""The projection engine.

A projection follows EVENTS with an ordered consumer (ephemeral, flow-controlled, no acks; the
position is ours) starting at ``last_seq + 1``. Each batch is applied in ONE SQLite transaction
that also stores the new ``last_seq``, so a crash mid-batch rolls the whole batch back and the
next start re-reads it; events at or below ``last_seq`` are skipped. Tables are named per
generation (``<projection>__<table>__g<n>``): ``rebuild`` fills generation n+1 from sequence 1
while generation n keeps answering queries, and swaps them when it has caught up.

Its lag (``cairn_projection_lag_messages``) is the stream's last sequence, as known from the
deliveries (each carries its own sequence and how many follow it) and from the stream's state
read at start and by the watchdog, minus the sequence applied; it is read when the metrics are.
The process is not ready (``/readyz``) until each projection has applied what its stream held
when it started.

A watchdog re-subscribes when the stream has moved past us and nothing arrived for ``stall_s``
(a pull or push subscription can silently stop after a server restart).

No event stops a projection for good. One that does not decode, or whose ``apply`` raises, is
set aside in ``projection_quarantine`` (projection, generation, seq, subject, error, time) in
the same transaction that moves ``last_seq`` past it, and the projection goes on. A batch is
first applied whole; only when an ``apply`` fails is it applied again one event at a time, each
inside a savepoint, so a failed event leaves none of its writes behind. ``retry`` applies the
quarantined events again (after a fix), in sequence order, on top of the current tables; those
that apply leave the table. A failure outside any one event (the disk) is logged and the batch
retried with backoff, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from nats.js.api import ConsumerConfig, DeliverPolicy

from cairn.bus import (
    Connection,
    EventStore,
    drop_subscription,
    per_client,
    permission_denied,
    stream_position,
    stream_seq,
    stream_time,
    transient,
)
from cairn.errors import CairnError, Unavailable
from cairn.log import get_logger
from cairn.projection._control import control_for
from cairn.proto.events import decode_envelope
from cairn.proto.streams import EVENTS
from cairn.proto.subjects import EVENTS_ALL
from cairn.telemetry import PROJECTION_APPLIED, PROJECTION_LAG, forget, read_through, readiness

__all__ = [
    "EVENTS_SOURCE",
    "METRICS_LINGER_S",
    "Delivered",
    "Projection",
    "ProjectionRunner",
    "Replayed",
    "Source",
    "Tables",
    "content_hash",
    "events_of",
    "first_difference",
    "replay",
]

log = get_logger("cairn.projection")
T = TypeVar("T")
V = TypeVar("V")


class Source(NamedTuple):
    """What a projection follows: a stream, a subject filter, and how to decode a message.

    ``kinds``, for EVENTS, names the aggregate kinds (``cairn.ev.<ws>.<kind>.<id>``) whose
    events the projection applies; the others are passed over undecoded. The filter stays on
    our side: the consumer still sees every sequence, so ``last_seq`` can answer any
    read-your-writes wait, whichever aggregate the write was to."""

    stream: str
    subjects: str
    decode: Callable[[bytes], Any]
    kinds: frozenset[str] | None = None
    #: how long a runner waits, once a message arrives after a quiet spell, before it applies
    #: the batch: in a process that also answers the writes (``cairn up``: the ingester and
    #: the gateway beside the metrics read models), the write's reply goes out first instead
    #: of waiting behind the apply on the same event loop, and what arrives meanwhile joins the
    #: same transaction. Reads that wait for the write see it that much later.
    linger_s: float = 0.0


EVENTS_SOURCE = Source(EVENTS.name, EVENTS_ALL, decode_envelope)
#: the ``linger_s`` of the read models of METRICS: off. At 3 ms a metric batch's reply
#: (≈ 5 ms at the server for 1,000 points) no longer waited behind their applies (≈ 1–1.5 ms
#: each), but another client then missed a run's last batch more often: the studio's live
#: page, told from EVENTS that the run ended, read the metrics before the batch stored just
#: before the end was applied (docs/benchmarks.md, MLflow's API)
METRICS_LINGER_S = 0.0


def events_of(*kinds: str) -> Source:
    """EVENTS, applying only the events of these aggregate kinds."""
    return EVENTS_SOURCE._replace(kinds=frozenset(kinds))


@dataclass(frozen=True, slots=True)
class Delivered(Generic[V]):
    """One decoded message and where it sits in its stream."""

    seq: int
    subject: str
    value: V


class Tables:
    """Maps a projection's table names to the physical names of one generation."""

    def __init__(self, projection: str, generation: int) -> None:
        self.projection = projection
        self.generation = generation

    def __call__(self, table: str) -> str:
        return f"{self.projection}__{table}__g{self.generation}"


class Projection(Protocol[V]):
    """A read model. ``apply`` must be deterministic: same messages, same rows."""

    name: str
    version: int
    tables: tuple[str, ...]
    source: Source

    def create(self, db: sqlite3.Connection, t: Tables) -> None: ...

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[V]) -> None: ...


def content_hash(db: sqlite3.Connection, projection: Projection[Any], t: Tables) -> str:
    """SHA-256 over every row of every table of one generation, in a canonical order."""
    digest = hashlib.sha256()
    for table in sorted(projection.tables):
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({t(table)})")]
        order = ", ".join(f'"{c}"' for c in cols)
        digest.update(f"{table}:{','.join(cols)}\n".encode())
        for row in db.execute(f'SELECT * FROM "{t(table)}" ORDER BY {order}'):
            digest.update(json.dumps(row, default=str).encode() + b"\n")
    return digest.hexdigest()


_STATE_DDL = """CREATE TABLE IF NOT EXISTS projection_state (
    name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, version INTEGER NOT NULL,
    generation INTEGER NOT NULL)"""
_QUARANTINE_DDL = """CREATE TABLE IF NOT EXISTS projection_quarantine (
    projection TEXT NOT NULL, generation INTEGER NOT NULL, seq INTEGER NOT NULL,
    subject TEXT NOT NULL, error TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (projection, generation, seq))"""
#: how much of an error a quarantine row keeps
_ERROR_CHARS = 2000


def open_db(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_STATE_DDL)
    db.execute(_QUARANTINE_DDL)
    return db


class ProjectionRunner(Generic[V]):
    """Runs one projection into one SQLite file; answers reads against its current tables."""

    def __init__(
        self,
        conn: Connection,
        db_path: Path | str,
        projection: Projection[V],
        *,
        batch_size: int = 500,
        stall_s: float = 10.0,
        poll_s: float = 1.0,
    ) -> None:
        self.conn = conn
        self.store = EventStore(conn, stream=projection.source.stream)
        self.projection = projection
        self.batch_size = batch_size
        self.stall_s = stall_s
        self.poll_s = poll_s
        self.db = open_db(db_path)
        self.skipped = 0
        self.resubscriptions = 0
        self._advanced = asyncio.Event()
        self._progress_at = time.monotonic()
        #: the stream's last sequence as last read from its state (at start, by the watchdog)
        self._stream_last: int | None = None
        self._hub: _Hub | None = None
        self._caught_up = False
        row = self.db.execute(
            "SELECT last_seq, version, generation FROM projection_state WHERE name = ?",
            (projection.name,),
        ).fetchone()
        if row is not None and row[1] == projection.version:
            self.last_seq, self.generation = int(row[0]), int(row[2])
        else:
            self.last_seq, self.generation = 0, (int(row[2]) + 1 if row else 1)
            self._start_generation(self.generation)
            with self.db:
                self._save_state(self.generation, 0)
                self._forget_quarantine_before(self.generation)

    @property
    def tables(self) -> Tables:
        return Tables(self.projection.name, self.generation)

    def _start_generation(self, generation: int) -> Tables:
        t = Tables(self.projection.name, generation)
        for table in self.projection.tables:
            self.db.execute(f'DROP TABLE IF EXISTS "{t(table)}"')
        self.db.execute(
            "DELETE FROM projection_quarantine WHERE projection = ? AND generation = ?",
            (self.projection.name, generation),
        )
        self.projection.create(self.db, t)
        return t

    def _forget_quarantine_before(self, generation: int) -> None:
        self.db.execute(
            "DELETE FROM projection_quarantine WHERE projection = ? AND generation < ?",
            (self.projection.name, generation),
        )

    def _save_state(self, generation: int, last_seq: int) -> None:
        self.db.execute(
            "INSERT INTO projection_state (name, last_seq, version, generation) VALUES (?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET last_seq=excluded.last_seq,"
            " version=excluded.version, generation=excluded.generation",
            (self.projection.name, last_seq, self.projection.version, generation),
        )

    # -- reading --------------------------------------------------------------------------

    def read(self, fn: Callable[[sqlite3.Connection, Tables], T]) -> tuple[T, int]:
        """Run ``fn`` on the current tables; also return the sequence they reflect."""
        return fn(self.db, self.tables), self.last_seq

    async def wait_for(self, min_seq: int, timeout: float) -> int:
        """Wait until ``last_seq >= min_seq`` (read-your-writes); raise ``Unavailable`` if the
        projection has not got there within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.last_seq < min_seq:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"read model {self.projection.name} is at {self.last_seq}, not {min_seq}"
                )
            self._advanced.clear()
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                continue
        return self.last_seq

    def content_hash(self) -> str:
        return content_hash(self.db, self.projection, self.tables)

    async def verify(self) -> dict[str, Any]:
        """Compare this read model with a new instance of its projection (made as
        ``type(projection)()``: projections hold no arguments) replayed from sequence 1 to
        the same position: the live tables are copied at one position
        (SQLite's backup, between two batches), the replay runs beside the live loop, and
        the first row that differs is named."""
        with tempfile.TemporaryDirectory(prefix="cairn-verify-") as tmp:
            snap = sqlite3.connect(str(Path(tmp) / "live.sqlite"), check_same_thread=False)
            try:
                self.db.backup(snap)  # no await since the last batch: one position
                seq, live = self.last_seq, self.tables
                fresh = type(self.projection)()
                replayed = await replay(self.conn, fresh, Path(tmp) / "replayed.sqlite", seq)
                try:
                    found = await asyncio.to_thread(
                        _compare, snap, live, replayed.db, replayed.tables, self.projection
                    )
                finally:
                    replayed.db.close()
            finally:
                snap.close()
        live_hash, replayed_hash, difference = found
        return {
            "read_model": self.projection.name,
            "last_seq": seq,
            "live_hash": live_hash,
            "replayed_hash": replayed_hash,
            "quarantined": replayed.quarantined,
            "same": difference is None,
            "difference": difference,
        }

    @property
    def lag(self) -> int:
        """How far the stream's last sequence (as far as this process knows it) is ahead of
        the sequence applied."""
        head = max(self._stream_last or 0, self._hub.head if self._hub is not None else 0)
        return max(head - self.last_seq, 0)

    @property
    def caught_up(self) -> bool:
        """Whether this projection has applied what its stream held when it started (once
        true, stays true: a busy stream is no reason to stop serving)."""
        if not self._caught_up and self._stream_last is not None:
            self._caught_up = self.last_seq >= self._stream_last
        return self._caught_up

    @property
    def quarantined(self) -> int:
        """How many events of the current generation are set aside."""
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM projection_quarantine WHERE projection = ? AND generation = ?",
            (self.projection.name, self.generation),
        ).fetchone()
        return int(count)

    def state(self, events: int = 20) -> dict[str, Any]:
        """Where this read model stands, with its latest ``events`` quarantined events."""
        rows = self.db.execute(
            "SELECT seq, subject, error, time FROM projection_quarantine"
            " WHERE projection = ? AND generation = ? ORDER BY seq DESC LIMIT ?",
            (self.projection.name, self.generation, events),
        ).fetchall()
        return {
            "read_model": self.projection.name,
            "generation": self.generation,
            "last_seq": self.last_seq,
            "quarantined": self.quarantined,
            "events": [
                {"seq": seq, "subject": subject, "error": error, "time": at}
                for seq, subject, error, at in rows
            ],
        }

    # -- applying -------------------------------------------------------------------------

    def _apply_batch(self, msgs: list[Any], t: Tables, last_seq: int) -> int:
        """Apply messages past ``last_seq`` into ``t`` in one transaction; return the new seq.

        A batch with nothing of the source's kinds is not written at all: its sequence is only
        remembered here, and a restart passes over the same events again."""
        kinds = self.projection.source.kinds
        todo: list[tuple[int, Any]] = []
        end = last_seq
        for msg in msgs:
            seq = stream_seq(msg.reply)
            if seq <= end:
                continue
            end = seq
            if kinds is None or _kind(msg.subject) in kinds:
                todo.append((seq, msg))
        if not todo:
            return end
        items = [(seq, msg.subject, msg.data) for seq, msg in todo]
        try:
            set_aside = self._commit(items, t, end, isolate=False)
        except Exception:  # an event it cannot apply: again, one by one, to set it aside
            set_aside = self._commit(items, t, end, isolate=True)
        self._report(set_aside)
        return end

    def _commit(
        self, items: list[tuple[int, str, bytes]], t: Tables, end: int, *, isolate: bool
    ) -> list[_SetAside]:
        """Apply ``items`` and move the position to ``end``, in one transaction; return the
        events it quarantined. Without ``isolate`` a failing ``apply`` rolls everything back
        and raises."""
        set_aside: list[_SetAside] = []
        with self.db:  # BEGIN ... COMMIT, or ROLLBACK on any exception
            self.db.execute("BEGIN")
            for seq, subject, data in items:
                failed = self._apply_one(t, seq, subject, data, isolate=isolate)
                if failed is not None:
                    set_aside.append(failed)
            if t.generation == self.generation:
                self._save_state(t.generation, end)
        return set_aside

    def _apply_one(
        self, t: Tables, seq: int, subject: str, data: bytes, *, isolate: bool
    ) -> _SetAside | None:
        """Apply one message inside the open transaction; what was set aside, if it was."""
        try:
            value = self.projection.source.decode(data)
        except Exception as exc:  # malformed, an unknown type, a field out of range
            return self._quarantine(t, seq, subject, exc, decoded=False)
        item = Delivered(seq, subject, value)
        if not isolate:
            self.projection.apply(self.db, t, item)
            return None
        self.db.execute("SAVEPOINT cairn_event")
        try:
            self.projection.apply(self.db, t, item)
        except Exception as exc:
            self.db.execute("ROLLBACK TO cairn_event")
            return self._quarantine(t, seq, subject, exc, decoded=True)
        finally:
            self.db.execute("RELEASE cairn_event")
        return None

    def _quarantine(
        self, t: Tables, seq: int, subject: str, exc: BaseException, *, decoded: bool
    ) -> _SetAside:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        self.db.execute(
            "INSERT OR REPLACE INTO projection_quarantine VALUES (?, ?, ?, ?, ?, ?)",
            (self.projection.name, t.generation, seq, subject, error, time.time()),
        )
        return _SetAside(seq, subject, error, decoded)

    def _report(self, set_aside: list[_SetAside]) -> None:
        for item in set_aside:
            if not item.decoded:
                self.skipped += 1
            log.error(
                "projection_quarantined",
                projection=self.projection.name,
                seq=item.seq,
                subject=item.subject,
                error=item.error,
            )

    async def retry(self) -> dict[str, Any]:
        """Apply the quarantined events of the current generation again, in sequence order,
        on top of the current tables: those that apply leave the quarantine, the others stay
        with their new error. (Where the order of events matters to a read model, ``rebuild``
        is the complete answer.)"""
        generation = self.generation
        rows = self.db.execute(
            "SELECT seq, subject FROM projection_quarantine"
            " WHERE projection = ? AND generation = ? ORDER BY seq",
            (self.projection.name, generation),
        ).fetchall()
        fetched: list[tuple[int, str, bytes | Exception]] = []
        for seq, subject in rows:
            try:
                msg = await self.conn.js.get_msg(self.projection.source.stream, seq)
                fetched.append((seq, subject, msg.data or b""))
            except Exception as exc:  # gone from the stream (limits, a purge), or no answer
                fetched.append((seq, subject, exc))
        applied = 0
        if self.generation == generation:  # else a rebuild swapped in its own quarantine
            t, set_aside = self.tables, list[_SetAside]()
            with self.db:  # no await from here on: the live loop cannot interleave
                self.db.execute("BEGIN")
                for seq, subject, data in fetched:
                    if isinstance(data, Exception):
                        failed: _SetAside | None = self._quarantine(
                            t, seq, subject, data, decoded=False
                        )
                    else:
                        failed = self._apply_one(t, seq, subject, data, isolate=True)
                    if failed is not None:
                        set_aside.append(failed)
                        continue
                    applied += 1
                    self.db.execute(
                        "DELETE FROM projection_quarantine"
                        " WHERE projection = ? AND generation = ? AND seq = ?",
                        (self.projection.name, generation, seq),
                    )
            self._report(set_aside)
            log.info("projection_retried", projection=self.projection.name, applied=applied)
        return {
            "read_model": self.projection.name,
            "retried": len(rows),
            "applied": applied,
            "quarantined": self.quarantined,
        }

    async def _subscribe(self, start: int) -> _Feed:
        """A feed of our own (a rebuild reads from sequence 1 beside the live one)."""
        feed = _Feed(self.batch_size * 4)
        source = self.projection.source
        feed.sub = await _ordered_consumer(self.conn, source, start, self.poll_s, feed.put)
        return feed

    async def _next_batch(self, feed: _Feed) -> list[Any]:
        """Up to ``batch_size`` messages: waits up to ``poll_s`` for the first (returning early,
        empty, when the feed is woken), then the source's ``linger_s`` (when the first found
        the queue empty), and not at all for the rest."""
        queue = feed.queue
        if queue.empty():
            try:
                async with asyncio.timeout(self.poll_s):
                    first = await queue.get()
            except TimeoutError:
                return []
            if first is _WAKE:
                return []
            if self.projection.source.linger_s > 0:
                await asyncio.sleep(self.projection.source.linger_s)
            batch = [first]
        else:
            batch = []
        while len(batch) < self.batch_size and not queue.empty():
            msg = queue.get_nowait()
            if msg is not _WAKE:
                batch.append(msg)
        return batch

    async def _stalled(self) -> bool:
        if time.monotonic() - self._progress_at < self.stall_s:
            return False
        try:
            last = await self.store.last_seq()
        except CairnError:
            return False
        self._stream_last = max(self._stream_last or 0, last)
        behind = last > self.last_seq
        if behind:
            log.warning("projection_stalled", projection=self.projection.name, seq=self.last_seq)
        self._progress_at = time.monotonic()
        return behind

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop`` is set, through the connection's shared feed; answer
        ``cairn status`` and ``cairn projection retry`` meanwhile."""
        name = self.projection.name
        # before the first await: a service that starts this task and yields once is not
        # ready (``/readyz``) until the projection has caught up
        readiness.add_check(self, f"projection {name}", lambda: self.caught_up)
        read_through(PROJECTION_APPLIED, (name,), self, lambda: self.last_seq)
        read_through(PROJECTION_LAG, (name,), self, lambda: self.lag)
        hub = self._hub = _hub_for(self.conn, self.projection.source)
        control = control_for(self.conn)
        stopped: asyncio.Future[Any] | None = None
        try:
            feed = await hub.join(self)
            await control.join(self)
            stopped = asyncio.ensure_future(stop.wait())
            stopped.add_done_callback(feed.wake)
            try:
                self._stream_last = await self.store.last_seq()
            except CairnError as exc:  # then it is ready on what it has
                log.warning("projection_stream_unknown", projection=name, error=str(exc))
                self._stream_last = 0
            while not stop.is_set():
                batch = await self._next_batch(feed)
                if batch:
                    self.last_seq = await self._apply_retrying(batch, stop)
                    self._progress_at = time.monotonic()
                    self._advanced.set()
                else:
                    seen = hub.generation  # before any await: a restart meanwhile is seen
                    if hub.due or await self._stalled():
                        self.resubscriptions += 1
                        await hub.resubscribe(seen)
        finally:
            if stopped is not None:
                stopped.cancel()
            readiness.remove_check(self)
            forget(PROJECTION_APPLIED, name, owner=self)
            forget(PROJECTION_LAG, name, owner=self)
            await control.leave(self)
            await hub.leave(self)

    async def _apply_retrying(self, batch: list[Any], stop: asyncio.Event) -> int:
        """Apply a batch; when that fails outside any one event (the disk, the database),
        log it and try the same batch again with backoff: the order of events is kept and
        none is skipped. A stop gives up; the next start reads the batch again."""
        delay = self.poll_s
        while True:
            try:
                return self._apply_batch(batch, self.tables, self.last_seq)
            except Exception:
                log.exception(
                    "projection_batch_failed", projection=self.projection.name, seq=self.last_seq
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return self.last_seq
            delay = min(delay * 2, 30.0)

    def _passed(self, seq: int) -> None:
        """The shared feed went past an event this projection does not apply, with nothing
        of ours waiting before it: our position moves without a wake-up."""
        if seq > self.last_seq:
            self.last_seq = seq
            self._progress_at = time.monotonic()
            self._advanced.set()

    async def rebuild(self) -> int:
        """Rebuild from sequence 1 into fresh tables; swap them in once caught up with the live
        generation. Queries keep being answered from the old tables until then."""
        generation = self.generation + 1
        t = self._start_generation(generation)
        seq = 0
        feed = await self._subscribe(1)
        try:
            while True:
                batch = await self._next_batch(feed)
                if batch:
                    seq = self._apply_batch(batch, t, seq)
                # No await between this check and the swap: the live loop cannot interleave.
                if seq >= self.last_seq and (not batch or feed.queue.empty()):
                    old = self.tables
                    with self.db:
                        self.db.execute("BEGIN")
                        self._save_state(generation, seq)
                        self._forget_quarantine_before(generation)
                        for table in self.projection.tables:
                            self.db.execute(f'DROP TABLE IF EXISTS "{old(table)}"')
                    self.generation, self.last_seq = generation, seq
                    self._advanced.set()
                    log.info("projection_rebuilt", projection=self.projection.name, seq=seq)
                    return seq
        finally:
            await drop_subscription(self.conn, feed.sub)

    def close(self) -> None:
        self.db.close()


class Replayed(NamedTuple):
    """A read model rebuilt from sequence 1 into a file of its own (``db`` still open)."""

    read_model: str
    last_seq: int
    #: events of the projection's kinds it was given, and how many of them it set aside
    events: int
    quarantined: int
    hash: str
    db: sqlite3.Connection
    tables: Tables


async def replay(
    conn: Connection,
    projection: Projection[Any],
    path: Path,
    until_seq: int | None = None,
    until_time: float | None = None,
) -> Replayed:
    """Apply ``projection`` (a fresh instance) from sequence 1 of its stream into a new
    SQLite file at ``path``, through the same batches, transactions and quarantine as the
    live loop, up to ``until_seq`` (default: the stream's last sequence when it starts) and,
    with ``until_time``, only messages the server stored at or before it (seconds since the
    epoch; a stream's times follow its sequence as far as the server's clock does).

    The new file is nothing until the replay has finished (a replay interrupted is started
    again, from an empty file), so its batches are not synced to disk one by one
    (``synchronous=OFF``: SQLite's checkpoints skip their fsyncs, a tenth of the tracking
    read model's replay in a profile); the last transaction, which records the position
    reached, is written with the live loop's setting and the whole file synced."""
    runner = _fresh_runner(conn, path, projection)
    runner.db.execute("PRAGMA synchronous=OFF")
    try:
        head = await runner.store.last_seq()
        end = head if until_seq is None else min(until_seq, head)
        seq, events = 0, 0
        kinds = projection.source.kinds
        if end > 0:
            feed = await runner._subscribe(1)
            try:
                seen_head = 0  # the stream's last sequence as the latest delivery said
                while seq < end:
                    batch = await runner._next_batch(feed)
                    if not batch:
                        if seen_head and seen_head <= seq:
                            break  # nothing stored past what we have: the rest was deleted
                        continue
                    seen_head = stream_position(batch[-1].reply)[1]
                    taken = [m for m in batch if stream_seq(m.reply) <= end]
                    if until_time is not None:
                        taken = list(_until(taken, until_time))
                    events += sum(1 for m in taken if kinds is None or _kind(m.subject) in kinds)
                    if taken:
                        seq = runner._apply_batch(taken, runner.tables, seq)
                    if len(taken) < len(batch):
                        break  # past the sequence or the time asked for
            finally:
                await drop_subscription(conn, feed.sub)
        runner.db.execute("PRAGMA synchronous=NORMAL")
        with runner.db:
            runner.db.execute("BEGIN")
            runner._save_state(runner.generation, seq)
        runner.db.execute("PRAGMA wal_checkpoint(FULL)")  # every batch on disk, synced
        runner.last_seq = seq
        return Replayed(
            projection.name,
            seq,
            events,
            runner.quarantined,
            runner.content_hash(),
            runner.db,
            runner.tables,
        )
    except BaseException:
        runner.close()
        raise


def _fresh_runner(
    conn: Connection, path: Path, projection: Projection[Any]
) -> ProjectionRunner[Any]:
    if path.exists():
        raise CairnError(f"{path} exists: a replay starts from an empty file")
    return ProjectionRunner(conn, path, projection)


def _until(msgs: list[Any], until_time: float) -> Iterator[Any]:
    for msg in msgs:
        if stream_time(msg.reply) > until_time:
            return
        yield msg


def first_difference(
    a: sqlite3.Connection, ta: Tables, b: sqlite3.Connection, tb: Tables, names: Iterable[str]
) -> dict[str, Any] | None:
    """The first row (tables by name, rows in their canonical order, as :func:`content_hash`
    reads them) that is in one of two read models and not the other, or ``None``."""
    for table in sorted(names):
        cols_a = [r[1] for r in a.execute(f"PRAGMA table_info({ta(table)})")]
        cols_b = [r[1] for r in b.execute(f"PRAGMA table_info({tb(table)})")]
        if cols_a != cols_b:
            return {"table": table, "columns": [cols_a, cols_b]}
        order = ", ".join(f'"{c}"' for c in cols_a)
        rows_a = a.execute(f'SELECT * FROM "{ta(table)}" ORDER BY {order}')
        rows_b = b.execute(f'SELECT * FROM "{tb(table)}" ORDER BY {order}')
        for row_a, row_b in itertools.zip_longest(rows_a, rows_b):
            if row_a != row_b:
                shown = [
                    None if r is None else dict(zip(cols_a, r, strict=True)) for r in (row_a, row_b)
                ]
                return {"table": table, "rows": shown}
    return None


def _compare(
    live: sqlite3.Connection,
    tl: Tables,
    replayed: sqlite3.Connection,
    tr: Tables,
    projection: Projection[Any],
) -> tuple[str, str, dict[str, Any] | None]:
    difference = first_difference(live, tl, replayed, tr, projection.tables)
    if difference is not None and "rows" in difference:
        live_row, replayed_row = difference.pop("rows")
        difference.update(live=live_row, replayed=replayed_row)
    return (
        content_hash(live, projection, tl),
        content_hash(replayed, projection, tr),
        difference,
    )


class _SetAside(NamedTuple):
    seq: int
    subject: str
    error: str
    decoded: bool


class _Feed:
    """Messages waiting for one projection: a bounded queue, filled by an ordered consumer's
    callback (its own, for a rebuild, or the shared one of a :class:`_Hub`).

    A callback (run by nats-py in one task per subscription) is much cheaper per message than
    ``next_msg``, which starts a task per call. When the queue is full the callback waits, the
    client stops reporting deliveries and JetStream flow control holds the rest back.
    """

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(size)
        self.sub: Any = None

    async def put(self, msg: Any) -> None:
        await self.queue.put(msg)

    def wake(self, _: object = None) -> None:
        """Make a waiting ``_next_batch`` return now (a full queue needs no waking)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_WAKE)


async def _ordered_consumer(
    conn: Connection, source: Source, start: int, heartbeat_s: float, cb: Any
) -> Any:
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    return await conn.js.subscribe(
        source.subjects,
        stream=source.stream,
        cb=cb,
        ordered_consumer=True,
        idle_heartbeat=max(heartbeat_s, 0.5),
        config=config,
    )


#: the longest pause between two tries to make a projection feed
_FEED_RETRY_MAX_S = 10.0


class _Hub:
    """One ordered consumer per connection and source, shared by every projection that
    follows it in this process: the server sends each event once, not once per read model.

    It starts at the lowest position among its members (again when one joins behind what it
    has already handed out, or a member's watchdog asks; the consumer it leaves is deleted)
    and hands each message to every member. A member is woken only for events of its kinds, or
    while it has messages waiting (to keep their order); otherwise its position just moves
    past the event. A member behind the feed skips what it has already applied by sequence,
    as after any redelivery.
    """

    def __init__(self, conn: Connection, source: Source) -> None:
        self.conn, self.source = conn, source
        self.members: dict[ProjectionRunner[Any], _Feed] = {}
        self.sub: Any = None
        self.start = 0
        #: the sequence of the latest message handed out (``start - 1`` before the first)
        self.delivered = 0
        #: the stream's last sequence as the latest delivery reported it
        self.head = 0
        self._lock = asyncio.Lock()
        #: after a feed the server could not make: when to ask again, and the pause after
        #: that (one state for the whole hub, however many members look)
        self._retry_at: float | None = None
        self._backoff = 0.0
        #: the cause of the last refusal logged (logged as an error once, not at every try)
        self._refused: str | None = None
        #: how many times the feed was (re)started: a member that saw the feed due compares
        #: it under the lock, so several members due at once restart it once
        self.generation = 0

    async def join(self, runner: ProjectionRunner[Any]) -> _Feed:
        feed = self.members[runner] = _Feed(runner.batch_size * 4)
        async with self._lock:
            # a member behind what the feed has handed out already would miss the events
            # between: the feed starts again from the member's position
            if self.sub is None or runner.last_seq < self.delivered:
                await self._restart()
        return feed

    async def leave(self, runner: ProjectionRunner[Any]) -> None:
        self.members.pop(runner, None)
        async with self._lock:
            if not self.members and self.sub is not None:
                sub, self.sub = self.sub, None
                await drop_subscription(self.conn, sub)

    @property
    def due(self) -> bool:
        """No feed now (the server could not make one) and the pause before asking again is
        over: the next member to look asks."""
        return self.sub is None and self._retry_over()

    def _retry_over(self) -> bool:
        return self._retry_at is None or time.monotonic() >= self._retry_at

    async def resubscribe(self, seen: int | None = None) -> None:
        """Start the feed again from the lowest member's position. ``seen``: the
        :attr:`generation` the caller saw when it decided to; nothing is done when another
        member restarted the feed since, or when there is no feed and the pause before the
        next try is not over (None: restart in any case)."""
        async with self._lock:
            if not self.members:
                return
            if seen is not None and (
                seen != self.generation or (self.sub is None and not self._retry_over())
            ):
                return
            await self._restart()

    async def _restart(self) -> None:
        """A new feed from the lowest member's position. When the server does not make one,
        the feed is left without a consumer and asked for again after a pause (see
        :attr:`due`) rather than stopping every projection of the process: a pause doubling
        to :data:`_FEED_RETRY_MAX_S` when it may pass (an election, no quorum: err 10008, a
        timeout), the longest one at once when it was refused (a permissions violation, a
        bad request), which is logged as an error naming its cause."""
        self.generation += 1
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await drop_subscription(self.conn, sub)
        self.start = min(r.last_seq for r in self.members) + 1
        self.delivered = self.start - 1
        beat = min(r.poll_s for r in self.members)
        try:
            self.sub = await _ordered_consumer(
                self.conn, self.source, self.start, beat, self._deliver
            )
        except Exception as exc:  # every failure schedules the next try; none ends the hub
            self._failed(exc, beat)
            return
        self._retry_at, self._backoff, self._refused = None, 0.0, None

    def _failed(self, exc: Exception, beat: float) -> None:
        denied = permission_denied(self.conn, f".CONSUMER.CREATE.{self.source.stream}")
        cause = str(denied or exc) or type(exc).__name__
        if denied is None and transient(exc):
            self._backoff = min(max(self._backoff * 2, beat), _FEED_RETRY_MAX_S)
            log.warning(
                "projection_feed_unavailable",
                stream=self.source.stream,
                error=cause,
                retry_s=round(self._backoff, 2),
            )
        else:
            self._backoff = _FEED_RETRY_MAX_S
            if cause != self._refused:
                self._refused = cause
                log.error(
                    "projection_feed_refused",
                    stream=self.source.stream,
                    error=cause,
                    retry_s=_FEED_RETRY_MAX_S,
                )
        self._retry_at = time.monotonic() + self._backoff

    async def _deliver(self, msg: Any) -> None:
        (seq, self.head), kind = stream_position(msg.reply), _kind(msg.subject)
        self.delivered = seq
        for runner, feed in list(self.members.items()):
            kinds = runner.projection.source.kinds
            if kinds is None or kind in kinds or not feed.queue.empty():
                await feed.put(msg)
            else:
                runner._passed(seq)


def _hub_for(conn: Connection, source: Source) -> _Hub:
    return per_client(conn, (_Hub, source.stream, source.subjects), lambda: _Hub(conn, source))


_WAKE = object()


def _kind(subject: str) -> str:
    """The aggregate kind of an event subject ``cairn.ev.<ws>.<kind>.<id>``."""
    tokens = subject.split(".", 4)
    return tokens[3] if len(tokens) == 5 else ""
