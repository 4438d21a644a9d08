"""A run page's live updates: one Server-Sent Events stream per open page, fed over the
signed-in user's own connection.

* ``metrics``: the run's scalar points, every one once. The stream first sends each series
  whole (a long one in chunks of :data:`CHUNK` points), then long-polls the metrics read
  model: ``metrics.history`` with ``min_seq`` one past the METRICS sequence it last saw,
  which the ingester answers as soon as it has applied that sequence (or, after ``WAIT_S``,
  with ``Unavailable``: nothing new). Each wake-up reads each series after its cursor, so
  only new points travel.
* ``run``: the run's record, whenever ``run.get`` (long-polled the same way on EVENTS) shows
  it changed.
* ``log``: chunks of the job's output, from an ordered consumer on LOGS (as ``cairn job
  stream`` reads them).

The feeds run as tasks owned by the response's generator: when the browser goes away the
server cancels the generator's wait, its ``finally`` cancels the feeds, and each feed's own
``finally`` unsubscribes its consumer, which the server removes ``INACTIVE_S`` later.
``LIVE`` counts the open streams and their running feeds (tests check that both fall back
to none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from cairn.errors import NotFound, Unavailable
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.commands import GetRun, Query, QueryResult
from cairn.proto.metrics import GetMetrics, MetricHistory
from cairn.rpc import Client
from cairn.services.gateway._auth import principal_of
from cairn.services.gateway._pool import Pool

__all__ = ["LIVE", "LIVE_ROUTES", "WAIT_S", "history_pages"]

log = get_logger("cairn.gateway")

#: how long one long-poll waits for the read model before the stream sends a keep-alive
WAIT_S = 10.0
#: how often, at most, the metric names of a live run are read again (a new metric)
NAMES_EVERY_S = 1.0
#: the most points of one series in one message (a long series' first load goes in chunks)
CHUNK = 50_000
#: how long the server keeps a log consumer whose page went away
INACTIVE_S = 5.0
_TERMINAL = {"Completed", "Failed", "Canceled"}
_Send = Callable[[ServerSentEventMessage], Awaitable[None]]


class _Live:
    """The open streams of this process, and their feeds (for tests and ``/metrics``)."""

    def __init__(self) -> None:
        self.streams = 0
        self.feeds: set[asyncio.Task[None]] = set()


LIVE = _Live()


async def _long_poll(client: Client, query: Query) -> QueryResult | None:
    """``query`` once its read model has passed ``query.min_seq``; None when it did not
    within ``query.wait_s`` (the read model answers ``Unavailable`` then)."""
    try:
        return await client.ask(query)
    except Unavailable:
        return None


async def history_pages(
    client: Client,
    run_id: str,
    name: str,
    after: Any = None,
    min_seq: int = 0,
    page_size: int = 200_000,
    most: int | None = None,
) -> tuple[list[Any], Any, int, bool]:
    """The points of ``name`` after cursor ``after``, read ``page_size`` at a time, at most
    ``most`` of them (all when None): (points ``[step, time, value]``, the cursor to read on
    from, the read model's sequence, whether more points follow that cursor now)."""
    points: list[Any] = []
    while True:
        size = page_size if most is None else max(1, min(page_size, most - len(points)))
        q = MetricHistory(run_id=run_id, name=name, after=after, min_seq=min_seq, limit=size)
        reply = await client.ask(q)
        page = reply.data
        points.extend(page["points"])
        if page["next"] is not None:
            after = tuple(page["next"])
            if most is not None and len(points) >= most:
                return points, after, reply.seq, True
            continue
        if page["points"]:
            # past the last point: its step, and a sequence no batch read here reached (the
            # read model's own when it answered), so a later batch's points at that step or
            # any later one come next, and none already sent comes again
            after = (int(page["points"][-1][0]), reply.seq + 1, -1)
        return points, after, reply.seq, False


async def _metrics_feed(client: Client, run_id: str, send: _Send) -> None:
    cursors: dict[str, Any] = {}
    seq, names_at, names_due = 0, 0.0, True
    loop = asyncio.get_running_loop()
    while True:
        if names_due and loop.time() - names_at >= NAMES_EVERY_S:
            names_at, names_due = loop.time(), False
            found = await client.ask(GetMetrics(run_id=run_id, min_seq=seq))
            seq = max(seq, found.seq)
            for name, entry in sorted(found.data.items()):
                if entry.get("kind") == "scalar":
                    cursors.setdefault(name, None)
        new: dict[str, list[Any]] = {}
        for name in list(cursors):
            more = True
            while more:  # a long series goes in chunks, each its own message
                points, cursors[name], at, more = await history_pages(
                    client, run_id, name, cursors[name], seq, most=CHUNK
                )
                seq = max(seq, at)
                if points and more:
                    await send(
                        ServerSentEventMessage(event="metrics", data=json.dumps({name: points}))
                    )
                elif points:
                    new[name] = points
        if new:
            await send(ServerSentEventMessage(event="metrics", data=json.dumps(new)))
        wait_s = WAIT_S
        if names_due:  # a batch came since the names were read: read them when they are due
            wait_s = max(0.05, names_at + NAMES_EVERY_S - loop.time())
        probe = next(iter(cursors), "_")
        woke = await _long_poll(
            client,
            MetricHistory(run_id=run_id, name=probe, limit=1, min_seq=seq + 1, wait_s=wait_s),
        )
        if woke is not None:
            seq, names_due = max(seq, woke.seq), True
        elif not names_due:
            await send(ServerSentEventMessage(comment="waiting", data=None))


async def _run_feed(client: Client, run_id: str, send: _Send) -> None:
    first = await client.ask(GetRun(run_id=run_id))
    seq, shown = first.seq, first.data
    await send(ServerSentEventMessage(event="run", data=json.dumps(shown)))
    while shown.get("status") not in _TERMINAL:
        woke = await _long_poll(client, GetRun(run_id=run_id, min_seq=seq + 1, wait_s=WAIT_S))
        if woke is None:
            continue
        seq = woke.seq
        if woke.data != shown:
            shown = woke.data
            await send(ServerSentEventMessage(event="run", data=json.dumps(shown)))


async def _log_feed(client: Client, run_id: str, send: _Send) -> None:
    """The job's output from the start of what LOGS keeps, then as it is written."""
    js = client.conn.js
    subject = subjects.logs(client.workspace, run_id)
    # unsubscribing leaves the (ephemeral) consumer to the server, which removes it once it has
    # had no subscriber for INACTIVE_S
    sub = await js.subscribe(subject, ordered_consumer=True, inactive_threshold=INACTIVE_S)
    try:
        while True:
            msg = await sub.next_msg(timeout=None)
            attempt = (msg.headers or {}).get("Cairn-Attempt", "")
            text = msg.data.decode("utf-8", errors="replace")
            body = json.dumps({"text": text, "attempt": attempt})
            await send(ServerSentEventMessage(event="log", data=body))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _events(
    client: Client, run_id: str, logs: bool, touch: Callable[[], None]
) -> AsyncIterator[Any]:
    queue: asyncio.Queue[ServerSentEventMessage] = asyncio.Queue(maxsize=256)
    feeds = [_metrics_feed(client, run_id, queue.put), _run_feed(client, run_id, queue.put)]
    if logs:
        feeds.append(_log_feed(client, run_id, queue.put))
    tasks = [
        asyncio.create_task(_guarded(f, queue.put), name=f"cairn-live:{run_id}") for f in feeds
    ]
    LIVE.streams += 1
    for task in tasks:
        LIVE.feeds.add(task)
        task.add_done_callback(LIVE.feeds.discard)
    try:
        yield ServerSentEventMessage(comment="live", retry=2000, data=None)
        while True:
            message = await queue.get()
            touch()  # the pool keeps the connection of a user whose page is open
            yield message
    finally:
        # no await here: the server cancels this generator's scope when the browser goes,
        # and would cancel any wait again; each feed's own ``finally`` releases what it holds
        LIVE.streams -= 1
        for task in tasks:
            task.cancel()


async def _guarded(feed: Awaitable[None], send: _Send) -> None:
    """A feed; when it fails, the page is told why (and keeps what it has)."""
    try:
        await feed
    except asyncio.CancelledError:
        raise
    except NotFound as exc:
        await send(
            ServerSentEventMessage(event="failed", data=json.dumps({"message": exc.message}))
        )
    except Exception as exc:
        log.warning("live_feed_failed", error=repr(exc))
        message = getattr(exc, "message", None) or type(exc).__name__
        await send(ServerSentEventMessage(event="failed", data=json.dumps({"message": message})))


@get("/api/w/{workspace:str}/runs/{run_id:str}/live")
async def run_live(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    logs: FromQuery[bool] = False,
) -> ServerSentEvent:
    """The run's new metric points, state and (``logs=true``) output, as they happen."""
    subjects.validate_token(run_id, "run id")
    principal = principal_of(request)
    client = Client(principal.conn, workspace)
    await client.ask(GetRun(run_id=run_id))  # NotFound / PermissionDenied before streaming
    pool: Pool = request.app.state.pool
    events = _events(client, run_id, logs, lambda: pool.touch(principal.user))
    return ServerSentEvent(events, headers={"x-accel-buffering": "no"})


LIVE_ROUTES: list[Any] = [run_live]
