"""Reading a stream once, in order, through an ordered consumer: the fastest way nats-py reads
a stream (docs/benchmarks.md, *Replay*). The consumer is ephemeral (in memory, no acks, deleted
when the read ends), flow-controlled, and made again by nats-py from the next sequence when a
delivery goes missing; each message is handed to a plain function in the subscription's own
callback (``next_msg`` would start a task per message).

Also here: a delivery's stream sequence, time and pending count, read from its reply subject
(nats-py's ``msg.metadata`` builds four objects per message for the same numbers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from cairn.bus._connect import Connection
from cairn.bus._store import TRANSIENT, EventStore
from cairn.errors import Unavailable
from cairn.log import get_logger

__all__ = [
    "drop_subscription",
    "read_ordered",
    "stream_position",
    "stream_seq",
    "stream_time",
]

log = get_logger(__name__)

#: how long a read may go without a delivery before it gives up (nats-py makes the consumer
#: again after two missed heartbeats; this bounds a server that stopped answering at all)
STALL_S = 60.0
_HEARTBEAT_S = 2.0


def stream_seq(reply: str) -> int:
    """The stream sequence from a JetStream delivery's reply subject, in either form:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or, with a domain
    and account hash, ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>...``."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def stream_time(reply: str) -> float:
    """When the server stored a delivered message (seconds since the epoch), from its reply
    subject."""
    tokens = reply.split(".")
    return int(tokens[7] if len(tokens) == 9 else tokens[9]) / 1e9


def stream_position(reply: str) -> tuple[int, int]:
    """A delivery's stream sequence and the stream's last sequence as the server saw it then
    (the sequence plus the messages pending after it), from its reply subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        seq, pending = int(tokens[5]), int(tokens[8])
    else:
        seq, pending = int(tokens[7]), int(tokens[10])
    return seq, seq + pending


async def drop_subscription(conn: Connection, sub: Any) -> None:
    """Stop a push subscription and delete its consumer now (the server would otherwise keep
    an ephemeral consumer without interest for a few seconds)."""
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection may already be closing
        log.debug("unsubscribe_failed", error=str(exc))
        return
    try:
        info = await sub.consumer_info()
        await conn.js.delete_consumer(info.stream_name, info.name)
    except Exception as exc:  # already gone (a server restart), or no answer: it expires
        log.debug("consumer_delete_failed", error=str(exc))


class _Reader:
    """The state of one read: where it is, where it ends, and how it ended."""

    def __init__(self, end: int, start: int, on_message: Callable[[int, Msg], None]) -> None:
        self.end, self.last, self.on_message = end, start - 1, on_message
        self.done = asyncio.Event()
        self.failed: Exception | None = None

    async def deliver(self, msg: Msg) -> None:
        if self.done.is_set():
            return
        seq, head = stream_position(msg.reply)
        if seq <= self.last:
            return  # handed out again by a consumer nats-py made again after a gap
        if seq > self.end:
            self.done.set()  # stored after the read began: not part of it
            return
        try:
            self.on_message(seq, msg)
        except Exception as exc:  # raised again by read_ordered, not lost in nats-py
            self.failed = exc
            self.done.set()
            return
        self.last = seq
        if seq >= self.end or head == seq:  # nothing more on the subjects as the server saw
            self.done.set()


async def read_ordered(
    conn: Connection,
    subjects: str,
    on_message: Callable[[int, Msg], None],
    *,
    stream: str,
    start: int = 1,
    stall_s: float = STALL_S,
) -> int:
    """Hand every message on ``subjects`` of ``stream`` from sequence ``start`` to the
    stream's last sequence when the read began to ``on_message(seq, msg)``, oldest first,
    each once; the sequence of the last one handed (``start - 1`` when none). What
    ``on_message`` raises stops the read and is raised here. ``Unavailable`` when nothing
    arrives for ``stall_s`` seconds before the end."""
    end = await EventStore(conn, stream=stream).last_seq()
    reader = _Reader(end, start, on_message)
    if end < start:
        return reader.last
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    try:
        sub = await conn.js.subscribe(
            subjects,
            stream=stream,
            cb=reader.deliver,
            ordered_consumer=True,
            idle_heartbeat=_HEARTBEAT_S,
            config=config,
        )
    except TRANSIENT as exc:
        raise Unavailable(f"stream {stream} could not be read in order: {exc!r}") from exc
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if not info.num_pending and not delivered:
            reader.done.set()  # nothing on the subjects: nothing will be delivered
        while not reader.done.is_set():
            before = reader.last
            try:
                async with asyncio.timeout(stall_s):
                    await reader.done.wait()
            except TimeoutError:
                if reader.last == before:
                    raise Unavailable(
                        f"stream {stream} stopped delivering {subjects} after seq {reader.last}"
                        f" (its last was {end} when the read began)"
                    ) from None
    except TRANSIENT as exc:
        raise Unavailable(f"stream {stream} could not be read in order: {exc!r}") from exc
    finally:
        await drop_subscription(conn, sub)
    if reader.failed is not None:
        raise reader.failed
    return reader.last
