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

Once the run has ended (``run`` shows it Completed, Failed or Canceled) each feed sends what
is left (the points not yet sent, the output not yet read) and stops; the stream then sends
``end`` and closes, and the page closes its EventSource (a page of a run already ended opens
none: it reads the histories and the output once). A person has at most
:data:`MOST_PER_PERSON` streams open, a gateway :data:`MOST_STREAMS`: beyond, 429.

The feeds run as tasks owned by the response's generator: when the browser goes away the
server cancels the generator's wait, its ``finally`` cancels the feeds, and each feed's own
``finally`` unsubscribes its consumer, which the server removes ``INACTIVE_S`` later.
``LIVE`` counts the open streams (released when the response is over, however it ended) and
their running feeds (tests check that both fall back to none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.errors
from litestar import Request, get
from litestar.exceptions import TooManyRequestsException
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from cairn.errors import NotFound, Unavailable
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.commands import GetRun, Query, QueryResult
from cairn.proto.metrics import GetMetrics, MetricHistory
from cairn.rpc import Client
from cairn.services.gateway._auth import after_response, principal_of
from cairn.services.gateway._pool import Pool

__all__ = [
    "LIVE",
    "LIVE_ROUTES",
    "MOST_PER_PERSON",
    "MOST_STREAMS",
    "TERMINAL",
    "WAIT_S",
    "history_pages",
]

log = get_logger("cairn.gateway")

#: how long one long-poll waits for the read model before the stream sends a keep-alive
WAIT_S = 10.0
#: how often, at most, the metric names of a live run are read again (a new metric)
NAMES_EVERY_S = 1.0
#: the most points of one series in one message (a long series' first load goes in chunks)
CHUNK = 50_000
#: how long the server keeps a log consumer whose page went away
INACTIVE_S = 5.0
#: the statuses of a run that has ended
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
#: open live streams at most, per person and per gateway
MOST_PER_PERSON = 16
MOST_STREAMS = 1024
#: once a run has ended, its output is read whole when this long passes with nothing new
LOG_QUIET_S = 1.0
#: the most characters of output a finished run's page is sent (the tail)
OUTPUT_BYTES = 200_000
_Send = Callable[[ServerSentEventMessage], Awaitable[None]]
#: what a feed's guard sends: a message, or None when the feed has sent all it will
_Put = Callable[[ServerSentEventMessage | None], Awaitable[None]]


class _Live:
    """The open streams of this process, by person, and their feeds (for the caps, tests and
    ``/metrics``)."""

    def __init__(self) -> None:
        self.streams = 0
        self.by_person: dict[str, int] = {}
        self.feeds: set[asyncio.Task[None]] = set()

    def open(self, person: str) -> None:
        """Count a new stream of ``person``'s; 429 when they, or this gateway, have too many."""
        if self.by_person.get(person, 0) >= MOST_PER_PERSON:
            raise TooManyRequestsException(
                f"too many live pages open: at most {MOST_PER_PERSON} per person"
                " (close some, then reload this one)"
            )
        if self.streams >= MOST_STREAMS:
            raise TooManyRequestsException(
                f"too many live pages open on this gateway (at most {MOST_STREAMS}):"
                " try again later"
            )
        self.streams += 1
        self.by_person[person] = self.by_person.get(person, 0) + 1

    def close(self, person: str) -> None:
        self.streams -= 1
        left = self.by_person.get(person, 1) - 1
        if left > 0:
            self.by_person[person] = left
        else:
            self.by_person.pop(person, None)


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


async def _metrics_feed(client: Client, run_id: str, send: _Send, ended: asyncio.Event) -> None:
    """New points as they come; once the run has ended, the points still unsent, then done."""
    cursors: dict[str, Any] = {}
    seq, names_at, names_due, final = 0, 0.0, True, False
    loop = asyncio.get_running_loop()
    while True:
        if final or (names_due and loop.time() - names_at >= NAMES_EVERY_S):
            names_at, names_due = loop.time(), False
            found = await client.ask(GetMetrics(run_id=run_id, min_seq=seq))
            seq = max(seq, found.seq)
            for name, entry in sorted(found.data.items()):
                if entry.get("kind") == "scalar":
                    cursors.setdefault(name, None)
        seq = await _send_new_points(client, run_id, send, cursors, seq)
        if final:
            return
        wait_s = WAIT_S
        if names_due:  # a batch came since the names were read: read them when they are due
            wait_s = max(0.05, names_at + NAMES_EVERY_S - loop.time())
        probe = next(iter(cursors), "_")
        poll = MetricHistory(run_id=run_id, name=probe, limit=1, min_seq=seq + 1, wait_s=wait_s)
        woke, final = await _until_ended(_long_poll(client, poll), ended)
        if woke is not None:
            seq, names_due = max(seq, woke.seq), True
        elif not names_due and not final:
            await send(ServerSentEventMessage(comment="waiting", data=None))


async def _send_new_points(
    client: Client, run_id: str, send: _Send, cursors: dict[str, Any], seq: int
) -> int:
    """Send each series' points after its cursor (a long one in chunks); the sequence seen."""
    new: dict[str, list[Any]] = {}
    for name in list(cursors):
        more = True
        while more:
            points, cursors[name], at, more = await history_pages(
                client, run_id, name, cursors[name], seq, most=CHUNK
            )
            seq = max(seq, at)
            if points and more:
                await send(ServerSentEventMessage(event="metrics", data=json.dumps({name: points})))
            elif points:
                new[name] = points
    if new:
        await send(ServerSentEventMessage(event="metrics", data=json.dumps(new)))
    return seq


async def _until_ended(
    wait: Awaitable[QueryResult | None], ended: asyncio.Event
) -> tuple[QueryResult | None, bool]:
    """``wait``'s result, or None when the run ended first; and whether it has ended."""
    waiting = asyncio.ensure_future(wait)
    stop = asyncio.ensure_future(ended.wait())
    try:
        await asyncio.wait([waiting, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, stop):
            task.cancel()
        await asyncio.gather(waiting, stop, return_exceptions=True)
    failed = None if waiting.cancelled() else waiting.exception()
    if waiting.cancelled() or failed is not None:
        if failed is not None and not ended.is_set():
            raise failed
        return None, ended.is_set()
    return waiting.result(), ended.is_set()


async def _run_feed(client: Client, run_id: str, send: _Send, ended: asyncio.Event) -> None:
    """The run's record as it changes, until it ends (``ended`` is set then)."""
    first = await client.ask(GetRun(run_id=run_id))
    seq, shown = first.seq, first.data
    await send(ServerSentEventMessage(event="run", data=json.dumps(shown)))
    while shown.get("status") not in TERMINAL:
        woke = await _long_poll(client, GetRun(run_id=run_id, min_seq=seq + 1, wait_s=WAIT_S))
        if woke is None:
            continue
        seq = woke.seq
        if woke.data != shown:
            shown = woke.data
            await send(ServerSentEventMessage(event="run", data=json.dumps(shown)))
    ended.set()


async def _log_messages(
    client: Client, run_id: str, ended: asyncio.Event | None
) -> AsyncIterator[tuple[str, str]]:
    """``(attempt, text)`` of the job's output from the start of what LOGS keeps, then as it
    is written; once ``ended`` is set (at once when it is None), until the output has been
    read whole (nothing pending, or nothing for ``LOG_QUIET_S``)."""
    js = client.conn.js
    subject = subjects.logs(client.workspace, run_id)
    # unsubscribing leaves the (ephemeral) consumer to the server, which removes it once it has
    # had no subscriber for INACTIVE_S
    sub = await js.subscribe(subject, ordered_consumer=True, inactive_threshold=INACTIVE_S)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=LOG_QUIET_S)
            except nats.errors.TimeoutError:
                if ended is None or ended.is_set():
                    return
                continue
            attempt = (msg.headers or {}).get("Cairn-Attempt", "")
            yield attempt, msg.data.decode("utf-8", errors="replace")
            if (ended is None or ended.is_set()) and msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _log_feed(client: Client, run_id: str, send: _Send, ended: asyncio.Event) -> None:
    """The job's output as it is written, until the run has ended and it has been sent."""
    async for attempt, text in _log_messages(client, run_id, ended):
        body = json.dumps({"text": text, "attempt": attempt})
        await send(ServerSentEventMessage(event="log", data=body))


async def _events(
    client: Client, run_id: str, logs: bool, touch: Callable[[], None]
) -> AsyncIterator[Any]:
    queue: asyncio.Queue[ServerSentEventMessage | None] = asyncio.Queue(maxsize=256)
    ended = asyncio.Event()
    feeds = [
        _metrics_feed(client, run_id, queue.put, ended),
        _run_feed(client, run_id, queue.put, ended),
    ]
    if logs:
        feeds.append(_log_feed(client, run_id, queue.put, ended))
    tasks = [
        asyncio.create_task(_guarded(f, queue.put), name=f"cairn-live:{run_id}") for f in feeds
    ]
    for task in tasks:
        LIVE.feeds.add(task)
        task.add_done_callback(LIVE.feeds.discard)
    try:
        yield ServerSentEventMessage(comment="live", retry=2000, data=None)
        done = 0
        while done < len(tasks):
            message = await queue.get()
            touch()  # the pool keeps the connection of a user whose page is open
            if message is None:  # a feed has sent all it will
                done += 1
            else:
                yield message
        yield ServerSentEventMessage(event="end", data=json.dumps({"status": "ended"}))
    finally:
        # no await here: the server cancels this generator's scope when the browser goes,
        # and would cancel any wait again; each feed's own ``finally`` releases what it holds
        for task in tasks:
            task.cancel()


async def _guarded(feed: Awaitable[None], send: _Put) -> None:
    """A feed; when it fails, the page is told why (and keeps what it has). Either way, a
    None last: the feed has sent all it will."""
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
    await send(None)


@get("/api/w/{workspace:str}/runs/{run_id:str}/live")
async def run_live(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    logs: FromQuery[bool] = False,
) -> ServerSentEvent:
    """The run's new metric points, state and (``logs=true``) output, as they happen; once the
    run has ended, what is left, an ``end`` event, and the stream closes. At most
    :data:`MOST_PER_PERSON` open streams per person and :data:`MOST_STREAMS` per gateway:
    beyond, 429."""
    subjects.validate_token(run_id, "run id")
    principal = principal_of(request)
    client = Client(principal.conn, workspace)
    await client.ask(GetRun(run_id=run_id))  # NotFound / PermissionDenied before streaming
    LIVE.open(principal.person)
    after_response(request, lambda: LIVE.close(principal.person))
    pool: Pool = request.app.state.pool
    events = _events(client, run_id, logs, lambda: pool.touch(principal.user))
    return ServerSentEvent(events, headers={"x-accel-buffering": "no"})


@get("/api/w/{workspace:str}/runs/{run_id:str}/output")
async def run_output(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> dict[str, Any]:
    """The job's output as LOGS keeps it now (its last :data:`OUTPUT_BYTES` characters):
    ``{"text", "truncated"}``; what a finished run's page shows instead of a live stream."""
    subjects.validate_token(run_id, "run id")
    client = Client(principal_of(request).conn, workspace)
    await client.ask(GetRun(run_id=run_id))  # NotFound / PermissionDenied before reading
    parts: list[str] = []
    size, truncated, shown = 0, False, ""
    async for attempt, text in _log_messages(client, run_id, None):
        if shown and attempt != shown:
            parts.append(f"\n--- attempt {attempt} ---\n")
        shown = attempt
        parts.append(text)
        size += len(text)
        while size > OUTPUT_BYTES and len(parts) > 1:
            size -= len(parts.pop(0))
            truncated = True
    text = "".join(parts)
    if len(text) > OUTPUT_BYTES:
        text, truncated = text[-OUTPUT_BYTES:], True
    return {"text": text, "truncated": truncated}


LIVE_ROUTES: list[Any] = [run_live, run_output]
