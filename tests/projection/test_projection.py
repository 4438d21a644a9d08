"""Exactly-once projections: crash mid-batch, rebuild from zero, restart of the server."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from cairn.bus import Connection, EventStore, connect, stream_seq
from cairn.embedded import NatsServer
from cairn.projection import Delivered, ProjectionRunner, Tables, events_of
from cairn.projection._engine import _Feed, _hub_for
from cairn.proto.commands import CompleteRun, CreateExperiment, CreateRun, StartRun
from cairn.rpc import Client
from cairn.services.tracking import TrackingProjection
from cairn.settings import Settings
from tests.conftest import LEAKS_SOCKETS, own_server
from tests.helpers import envelope

CHILD = Path(__file__).with_name("_dying_child.py")


async def _populate(client: Client, runs: int) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="exp"))

    async def one(i: int) -> None:
        rid = f"r{i}"
        await client.send(CreateRun(command_id=uuid.uuid4().hex, run_id=rid, experiment_name="exp"))
        await client.send(StartRun(command_id=uuid.uuid4().hex, run_id=rid))
        if i % 3:
            await client.send(CompleteRun(command_id=uuid.uuid4().hex, run_id=rid))

    for start in range(0, runs, 20):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 20, runs))))


async def _caught_up(runner: ProjectionRunner, store: EventStore) -> None:
    await runner.wait_for(await store.last_seq(), timeout=30)


async def _subscription(runner: ProjectionRunner) -> Any:
    """The runner's shared feed, once it has its subscription (a runner on an empty stream is
    caught up before it has subscribed)."""
    hub = _hub_for(runner.conn, runner.projection.source)
    async with asyncio.timeout(30):
        while hub.sub is None:
            await asyncio.sleep(0.02)
    return hub


async def test_killed_mid_batch_and_rebuilt_equal_live(
    client: Client, conn: Connection, store: EventStore, service_settings: Settings, tmp_path: Path
) -> None:
    await _populate(client, 60)
    live = ProjectionRunner(conn, tmp_path / "live.sqlite", TrackingProjection())
    stop = asyncio.Event()
    live_task = asyncio.create_task(live.run(stop))
    try:
        await _caught_up(live, store)
        total = await store.last_seq()

        db_path = tmp_path / "killed.sqlite"
        kill_at = total // 2
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            msgspec.json.encode(service_settings).decode(),
            str(db_path),
            str(kill_at),
            "64",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == -9, err.decode()
        killed_seq = int(out.decode().split("killing at seq ")[1])
        db = sqlite3.connect(db_path)
        (stored_seq,) = db.execute("SELECT last_seq FROM projection_state").fetchone()
        db.close()
        assert stored_seq < killed_seq, "the batch in flight at the kill must be rolled back"

        restarted = ProjectionRunner(conn, db_path, TrackingProjection())
        assert restarted.last_seq == stored_seq
        r_stop = asyncio.Event()
        r_task = asyncio.create_task(restarted.run(r_stop))
        await _caught_up(restarted, store)
        assert restarted.content_hash() == live.content_hash()
        r_stop.set()
        await r_task

        generation = live.generation
        await live.rebuild()
        assert live.generation == generation + 1
        assert restarted.content_hash() == live.content_hash()
        tables = {
            r[0] for r in live.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert not any(name.endswith(f"__g{generation}") for name in tables)
        (runs,), _ = live.read(
            lambda db, t: db.execute(
                f"SELECT COUNT(*) FROM {t('runs')} WHERE workspace=?", (client.workspace,)
            ).fetchone()
        )
        assert runs == 60
    finally:
        stop.set()
        await live_task


async def test_rebuild_keeps_answering_and_catches_up_with_new_events(
    client: Client, conn: Connection, store: EventStore, tmp_path: Path
) -> None:
    await _populate(client, 10)
    runner = ProjectionRunner(conn, tmp_path / "p.sqlite", TrackingProjection(), batch_size=8)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _caught_up(runner, store)
        before = runner.content_hash()
        rebuilding = asyncio.create_task(runner.rebuild())
        await _populate_more(client)
        (count,), _ = runner.read(
            lambda db, t: db.execute(f"SELECT COUNT(*) FROM {t('runs')}").fetchone()
        )
        assert count >= 10
        await rebuilding
        await _caught_up(runner, store)
        fresh = ProjectionRunner(conn, tmp_path / "fresh.sqlite", TrackingProjection())
        f_stop = asyncio.Event()
        f_task = asyncio.create_task(fresh.run(f_stop))
        await _caught_up(fresh, store)
        f_stop.set()
        await f_task
        assert runner.content_hash() == fresh.content_hash() != before
    finally:
        stop.set()
        await task


async def _populate_more(client: Client) -> None:
    for i in range(5):
        await client.send(
            CreateRun(command_id=uuid.uuid4().hex, run_id=f"late{i}", experiment_name="exp")
        )


async def test_version_bump_rebuilds_from_zero(
    conn: Connection, store: EventStore, tmp_path: Path
) -> None:
    class V2(TrackingProjection):
        version = TrackingProjection.version + 1

    path = tmp_path / "v.sqlite"
    first = ProjectionRunner(conn, path, TrackingProjection())
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await _caught_up(first, store)
    stop.set()
    await task
    first.close()
    second = ProjectionRunner(conn, path, V2())
    assert second.last_seq == 0 and second.generation == first.generation + 1


@LEAKS_SOCKETS
async def test_follows_across_a_server_restart(tmp_path: Path, nats_py_leaks: None) -> None:
    server, _, conn = await own_server(tmp_path / "home", request_timeout=2.0)
    store = EventStore(conn)
    runner = ProjectionRunner(
        conn, tmp_path / "p.sqlite", TrackingProjection(), stall_s=2.0, poll_s=0.5
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        first = await store.append(
            "cairn.ev.rs.experiment.a", [envelope("rs", "a")], expected_seq=0, msg_id="a"
        )
        await runner.wait_for(first.seq, timeout=10)
        server.stop()
        await asyncio.sleep(0.5)
        server = NatsServer(tmp_path / "home", port=server.port)
        await server.start()
        second = None
        for _ in range(50):  # the client reconnects on its own
            try:
                second = await store.append(
                    "cairn.ev.rs.experiment.b", [envelope("rs", "b")], expected_seq=0, msg_id="b"
                )
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert second is not None
        await runner.wait_for(second.seq, timeout=20)
        (names,), _ = runner.read(
            lambda db, t: db.execute(
                f"SELECT group_concat(name) FROM {t('experiments')}"
            ).fetchone()
        )
        assert names == "a,b"
    finally:
        stop.set()
        await task
        await conn.close()
        server.stop()


def test_stream_seq_reads_both_reply_forms() -> None:
    assert stream_seq("$JS.ACK.EVENTS.c1.1.42.7.1732312312312312312.0") == 42
    assert stream_seq("$JS.ACK.hub.ACCHASH.EVENTS.c1.1.42.7.1732312312312312312.0.tok") == 42


async def test_watchdog_resubscribes_a_silent_subscription(
    conn: Connection, store: EventStore, tmp_path: Path, ws_name: str
) -> None:
    runner = ProjectionRunner(
        conn, tmp_path / "w.sqlite", TrackingProjection(), stall_s=1.0, poll_s=0.2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _caught_up(runner, store)
        hub = await _subscription(runner)
        await hub.sub.unsubscribe()  # the shared subscription goes quiet behind its back
        result = await store.append(
            f"cairn.ev.{ws_name}.experiment.w",
            [envelope(ws_name, "w")],
            expected_seq=0,
            msg_id=uuid.uuid4().hex,
        )
        await runner.wait_for(result.seq, timeout=15)
        assert runner.resubscriptions >= 1
    finally:
        stop.set()
        await task


@LEAKS_SOCKETS
async def test_a_resubscription_refused_once_is_tried_again(
    conn: Connection,
    store: EventStore,
    tmp_path: Path,
    ws_name: str,
    monkeypatch: pytest.MonkeyPatch,
    nats_py_leaks: None,
) -> None:
    """The watchdog's first resubscription is answered as a server without a stream leader
    answers during an election (503, err 10008; injected here: one node cannot hold one):
    the runner lives on, tries again after another stall, and catches up."""
    from nats.js.errors import ServiceUnavailableError

    from cairn.projection import _engine

    real = _engine._ordered_consumer
    refused: list[int] = []

    async def once_refused(*args: Any) -> Any:
        if not refused:
            refused.append(1)
            raise ServiceUnavailableError(
                code=503, err_code=10008, description="JetStream system temporarily unavailable"
            )
        return await real(*args)

    runner = ProjectionRunner(
        conn, tmp_path / "r.sqlite", TrackingProjection(), stall_s=1.0, poll_s=0.2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _caught_up(runner, store)
        hub = await _subscription(runner)
        monkeypatch.setattr(_engine, "_ordered_consumer", once_refused)
        await hub.sub.unsubscribe()  # the shared subscription goes quiet behind its back
        result = await store.append(
            f"cairn.ev.{ws_name}.experiment.r",
            [envelope(ws_name, "r")],
            expected_seq=0,
            msg_id=uuid.uuid4().hex,
        )
        await runner.wait_for(result.seq, timeout=30)
        assert refused == [1] and runner.resubscriptions >= 2 and not task.done()
    finally:
        stop.set()
        await task


async def test_a_refusal_after_an_unavailable_feed_backs_off_and_is_logged_once(
    conn: Connection, store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feed the server cannot make now (503, err 10008) and then refuses (400, err 10057):
    every failure puts the next try in the future (the hub is not due at once, so no member
    spins on it), the refusal takes the longest pause and is logged as an error once, however
    often it is answered again; a member's watchdog does not retry before the pause is over."""
    from nats.js.errors import APIError, ServiceUnavailableError

    from cairn.projection import _engine

    runner = ProjectionRunner(conn, tmp_path / "b.sqlite", TrackingProjection(), poll_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    tries: list[int] = []

    async def failing(*args: Any) -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise ServiceUnavailableError(code=503, err_code=10008, description="no leader")
        raise APIError(code=400, err_code=10057, description="bad request")

    try:
        await _caught_up(runner, store)
        hub = await _subscription(runner)
        monkeypatch.setattr(_engine, "_ordered_consumer", failing)
        with structlog.testing.capture_logs() as logs:
            await hub.resubscribe()
            assert hub.sub is None and not hub.due
            for _ in range(2):
                await hub.resubscribe()
                assert hub.sub is None and not hub.due
            await hub.resubscribe(hub.generation)  # as a member's watchdog: too early
        assert len(tries) == 3
        refused = [e for e in logs if e["event"] == "projection_feed_refused"]
        assert len(refused) == 1 and refused[0]["log_level"] == "error", logs
        assert "bad request" in refused[0]["error"]
        assert any(e["event"] == "projection_feed_unavailable" for e in logs), logs
        assert not task.done()
    finally:
        stop.set()
        await task


async def test_a_feed_refused_by_permissions_is_logged_as_an_error_naming_it(
    agent_settings: Settings, tmp_path: Path
) -> None:
    """A projection whose user may not create a consumer on EVENTS (here an agent's): the
    refusal is logged once as an error naming the subject, the next try waits the longest
    pause, and the runner keeps running (not ready) instead of retrying quietly."""
    settings = msgspec.structs.replace(agent_settings, request_timeout=1.0)
    conn = await connect(settings)
    stop = asyncio.Event()
    runner = ProjectionRunner(conn, tmp_path / "d.sqlite", TrackingProjection(), poll_s=0.2)
    task: asyncio.Task[None] | None = None
    try:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(runner.run(stop))
            hub = _hub_for(conn, runner.projection.source)
            async with asyncio.timeout(30):
                while not any(e["event"] == "projection_feed_refused" for e in logs):
                    await asyncio.sleep(0.05)
        refused = [e for e in logs if e["event"] == "projection_feed_refused"]
        assert len(refused) == 1 and refused[0]["log_level"] == "error"
        assert (
            "not allowed" in refused[0]["error"]
            and "consumer.create.events" in (refused[0]["error"])
        )
        assert hub.sub is None and not hub.due and not task.done()
    finally:
        stop.set()
        if task is not None:
            await task
        await conn.close()


async def test_members_due_at_once_restart_the_feed_once(
    conn: Connection, store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several members that saw the feed due (the same generation) and queue on the hub's
    lock restart the shared consumer once, not once each."""
    from cairn.projection import _engine

    runners = [
        ProjectionRunner(conn, tmp_path / f"m{i}.sqlite", TrackingProjection(), poll_s=0.2)
        for i in range(3)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    real = _engine._ordered_consumer
    made: list[int] = []

    async def counted(*args: Any) -> Any:
        made.append(1)
        return await real(*args)

    try:
        for runner in runners:
            await _caught_up(runner, store)
        hub = await _subscription(runners[0])
        monkeypatch.setattr(_engine, "_ordered_consumer", counted)
        seen = hub.generation
        await asyncio.gather(*(hub.resubscribe(seen) for _ in range(5)))
        assert made == [1] and hub.sub is not None and hub.generation == seen + 1
    finally:
        stop.set()
        for task in tasks:
            await task


async def test_events_of_other_kinds_are_passed_over_undecoded(
    conn: Connection, store: EventStore, tmp_path: Path, ws_name: str
) -> None:
    """Tracking applies runs and experiments, not models: a model event is never decoded (here
    it could not be), yet the runner's position moves past it, so a read-your-writes wait on
    it returns. And a stop is seen at once, not after the poll interval."""
    runner = ProjectionRunner(conn, tmp_path / "k.sqlite", TrackingProjection(), poll_s=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _caught_up(runner, store)
        await conn.js.publish(f"cairn.ev.{ws_name}.model.m", b"not an envelope")
        await conn.js.publish(f"cairn.ev.{ws_name}.experiment.bad", b"not an envelope")
        last = await conn.js.publish(f"cairn.ev.{ws_name}.model.m", b"not one either")
        assert await runner.wait_for(last.seq, timeout=15) == last.seq
        assert runner.skipped == 1  # only the experiment's: its kind is one tracking applies
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class _Seen:
    """Records every event it applies, one row each: a double apply shows as a repeated row."""

    version = 1
    tables = ("seen",)

    def __init__(self, kind: str) -> None:
        self.name = f"seen_{kind}"
        self.source = events_of(kind)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('seen')} (seq INTEGER, subject TEXT)")

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Any]) -> None:
        db.execute(f"INSERT INTO {t('seen')} VALUES (?, ?)", (item.seq, item.subject))


def _seen(runner: ProjectionRunner[Any], ws: str) -> list[int]:
    def query(db: sqlite3.Connection, t: Tables) -> list[tuple[int]]:
        sql = f"SELECT seq FROM {t('seen')} WHERE subject LIKE ? ORDER BY seq"
        return db.execute(sql, (f"cairn.ev.{ws}.%",)).fetchall()

    rows, _ = runner.read(query)
    return [seq for (seq,) in rows]


async def test_projections_of_one_connection_share_one_consumer(
    conn: Connection, store: EventStore, tmp_path: Path, ws_name: str
) -> None:
    """The read models of one process follow EVENTS through one consumer, so the server sends
    each event once. A projection joining further back is caught up from its own position
    without the other applying anything twice, and each moves past the other's events."""

    async def consumers() -> int:
        return int((await conn.js.stream_info("EVENTS")).state.consumer_count)

    async def append(kind: str, name: str) -> int:
        env = envelope(ws_name, name)
        subject = f"cairn.ev.{ws_name}.{kind}.{name}"
        return (await store.append(subject, [env], expected_seq=0, msg_id=uuid.uuid4().hex)).seq

    before = await consumers()
    experiments = ProjectionRunner(conn, tmp_path / "e.sqlite", _Seen("experiment"))
    models = ProjectionRunner(conn, tmp_path / "m.sqlite", _Seen("model"))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(experiments.run(stop))]
    try:
        m0 = await append("model", "m0")
        e1 = await append("experiment", "e1")
        await experiments.wait_for(e1, timeout=15)
        # from sequence 1, behind what the feed has handed out: the feed starts again for it
        tasks.append(asyncio.create_task(models.run(stop)))
        m1 = await append("model", "m1")
        e2 = await append("experiment", "e2")
        assert await models.wait_for(e2, timeout=15) >= e2  # past the experiment, undecoded
        assert await experiments.wait_for(e2, timeout=15) >= e2
        assert _seen(experiments, ws_name) == [e1, e2]
        assert _seen(models, ws_name) == [m0, m1]
        assert await consumers() == before + 1  # the feed's first consumer was deleted
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert _hub_for(conn, experiments.projection.source).sub is None  # the last out leaves


@pytest.mark.parametrize(("linger_s", "batched"), [(0.0, 1), (0.2, 3)])
async def test_a_source_that_lingers_takes_what_arrives_meanwhile_into_the_batch(
    conn: Connection, tmp_path: Path, linger_s: float, batched: int
) -> None:
    """After a quiet spell, a runner whose source lingers waits that long before it applies:
    what arrives meanwhile joins the batch (one transaction), and the write that caused the
    first message is answered before the apply takes the event loop."""
    seen = _Seen("run")
    seen.source = seen.source._replace(linger_s=linger_s)
    runner = ProjectionRunner(conn, tmp_path / "l.sqlite", seen)
    feed = _Feed(16)
    taking = asyncio.create_task(runner._next_batch(feed))
    await asyncio.sleep(0)  # waiting on the empty queue
    await feed.put("first")
    await asyncio.sleep(0)  # the first taken; lingering, or done
    await feed.put("second")
    await feed.put("third")
    assert await asyncio.wait_for(taking, 5) == ["first", "second", "third"][:batched]
