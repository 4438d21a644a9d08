"""A serving replica's agent side: the channel to its process, and the relay of the
deployment's requests to it.

The replica holds no NATS connection, as no job does, and its gate lets nothing through. The
agent listens on ``serve.sock`` in the attempt's gate folder (only the launched replica's own
process may connect); the replica connects once its ``init()`` returned
(:mod:`cairn.serving`). Then, and only then, the agent subscribes with its own connection to
``cairn.serve.<ws>.<endpoint>.<deployment>`` in the deployment's queue group and reports the
replica ready (again until the scheduler acknowledges it: :func:`until_acknowledged`),
relaying each request down the channel (up to the deployment's ``max_concurrent_requests``
at once, as many more waiting) and the answer back with its status in the ``Cairn-Status``
header, in chunks when it is larger than a NATS message (:func:`publish_answer`). A request
carries the gateway's ``Cairn-Timeout-Ms``; one whose caller has given up while it waited is
dropped, not computed. So the replica serves exactly its deployment's requests and can send
nothing anywhere but its answers.

The replica's status is user code's to choose (it can write its own frames): only those a
replica gives (:data:`REPLICA_STATUSES`) pass, any other is 502. A 429 comes from the agent
alone, for a request that never reached ``run()``, and only it carries ``Cairn-Unrun: 1``,
the one answer the gateway may send to another replica.

A ``run()`` past ``request_timeout_s`` is answered 504 and ends the replica, but not the
requests it is answering: the channel stops taking requests (:attr:`ReplicaChannel.stopping`,
429 to any new one), the relay drains (the others finish within their own time), then the
agent kills the replica and its loss gets it started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import os
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from cairn.errors import CairnError
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.metrics import MetricPoint
from cairn.proto.serving import ReplicaSpec
from cairn.rpc import SCORER_USER
from cairn.services.agent._gate import peer_in_session
from cairn.serving import (
    LENGTH,
    MAX_ANSWER_CHUNKS,
    MAX_FRAME_BYTES,
    SOCKET_NAME,
    ServeAnswer,
    ServeHello,
    ServeRequest,
    decode,
    encode,
)

__all__ = [
    "CHUNKS_HEADER",
    "CHUNK_HEADER",
    "REPLICA_STATUSES",
    "STATUS_HEADER",
    "TIMEOUT_HEADER",
    "UNRUN_HEADER",
    "Relay",
    "ReplicaChannel",
    "RequestStats",
    "deadline_of",
    "descends_from",
    "publish_answer",
    "relay",
    "until_acknowledged",
]

log = get_logger("cairn.agent")
#: the reply header carrying the HTTP status of an answer
STATUS_HEADER = "Cairn-Status"
#: the headers of an answer sent in chunks: the chunk's index, and how many there are
CHUNK_HEADER = "Cairn-Chunk"
CHUNKS_HEADER = "Cairn-Chunks"
#: room left in a message beside a chunk (its headers and the protocol's own)
CHUNK_HEADROOM = 64 * 1024
#: the request header saying how many milliseconds the caller still waits for the answer
TIMEOUT_HEADER = "Cairn-Timeout-Ms"
#: the queue group of a deployment's replicas (the subject names the deployment)
QUEUE = "replicas"
#: the answer header (``1``) saying that nothing ran: set by the agent alone, on a 429 of
#: its own (admission refused before ``run()``); the gateway asks another replica only then
UNRUN_HEADER = "Cairn-Unrun"
#: the statuses a replica may answer (``cairn.serving``: run()'s answer, a body that is not
#: JSON, run() raised, its caller gone before run()); any other is 502
REPLICA_STATUSES = frozenset({200, 400, 500, 504})


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _restarting() -> tuple[int, bytes]:
    return 429, _error("the replica is restarting (a run() took longer than its time)")


def descends_from(pid: int, root: int) -> bool:
    """Whether process ``pid`` is ``root`` or one of its descendants (its parents, read
    from ``/proc``)."""
    seen = 0
    while pid > 1 and seen < 4096:
        if pid == root:
            return True
        try:  # bytes: a process names itself, in any bytes (its Name: line)
            status = Path(f"/proc/{pid}/status").read_bytes()
        except OSError:
            return False
        parent = next((ln for ln in status.splitlines() if ln.startswith(b"PPid:")), b"")
        try:
            pid = int(parent.split()[1])
        except (IndexError, ValueError):
            return False
        seen += 1
    return pid == root


class ReplicaChannel:
    """The socket one replica connects to once it is ready. Up to ``workers`` requests are in
    the replica's hands at once (its ``run()`` calls, each in a worker thread); as many more
    wait for a free worker, for at most ``queue_wait`` seconds (then 503); beyond those the
    replica is busy (429, which nothing has run, so the gateway may ask another replica).

    Only the launched replica is let in: a connection is held until :meth:`admit` says what
    was launched, then kept only when its peer (``SO_PEERCRED``, what the kernel says, not
    the peer) runs as this agent's user, in the replica's session (a process), is the
    launched process or one of its descendants (a container: of the container's first
    process, when this agent's pid namespace shows it), and its hello carries the token
    only the launched replica's environment holds (:data:`cairn.serving.TOKEN_ENV`).

    A ``run()`` past its time sets :attr:`stopping`: the request is answered 504, its worker
    stays counted as taken (its thread cannot be stopped), new requests are refused (429,
    nothing ran) and those in the replica's hands go on; its agent then drains and restarts
    the replica."""

    def __init__(self, folder: Path, *, workers: int = 1, queue_wait: float = 0.5) -> None:
        self.path = folder / SOCKET_NAME
        self.session: int | None = None
        #: the launched process (None: not known in this agent's pid namespace)
        self.root: int | None = None
        #: what the replica's hello must carry: given to it in its environment alone
        self.token = secrets.token_hex(16)
        self.workers, self.queue_wait = workers, queue_wait
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        #: a run() overran: no new request; those in the replica's hands finish
        self.stopping = asyncio.Event()
        #: closed or stopping: the replica serves no more
        self.over = asyncio.Event()
        #: requests whose run() overran: a late answer to one is dropped
        self._abandoned: set[int] = set()
        self._launched = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._room = asyncio.Semaphore(workers)
        #: requests running or waiting for a worker
        self._admitted = 0
        self._pending: dict[int, asyncio.Future[ServeAnswer]] = {}
        self._ids = itertools.count(1)
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        self.path.chmod(0o600)

    def admit(self, session: int | None, root: int | None = None) -> None:
        """The replica is launched: from now on only it may connect. ``session``: the
        session a process replica leads (None: a container's); ``root``: the launched
        process (a container's first process, as this agent's pid namespace numbers it;
        None when it cannot)."""
        self.session, self.root = session, root
        self._launched.set()

    def _refusal(self, writer: asyncio.StreamWriter, hello: ServeHello) -> str | None:
        """Why the peer is not the launched replica (None: it is)."""
        if not hmac.compare_digest(hello.token.encode(), self.token.encode()):
            return "its hello has not the launch's token"
        if not peer_in_session(writer, self.session):
            return "it is not in the replica's session"
        try:
            raw = writer.get_extra_info("socket").getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
            )
        except OSError:
            return "its credentials cannot be read"
        pid, uid, _ = struct.unpack("3i", raw)
        if uid != os.geteuid():
            return f"it runs as uid {uid}"
        if self.session is not None:  # a process: the launched one, or one it started
            if self.root is None or not descends_from(pid, self.root):
                return f"process {pid} is not the launched one ({self.root}) nor its descendant"
            return None
        # a container: pid 0 is a peer this namespace does not show (an agent in a
        # container of its own, beside the replica's), and with no first process known the
        # token and the user are what is checked; else it descends from the container's
        # first process
        if pid == 0 or self.root is None or descends_from(pid, self.root):
            return None
        return f"process {pid} is not of the launched container ({self.root})"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._launched.wait(), 30)
            frame = decode(await asyncio.wait_for(self._frame(reader), 30))
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()
            return
        if self._writer is not None or self.closed.is_set():
            refused: str | None = "a replica is connected already, or it has ended"
        elif not isinstance(frame, ServeHello):
            refused = "its first frame is no hello"
        else:
            refused = self._refusal(writer, frame)
        if refused is not None:
            log.warning("serve_peer_refused", path=str(self.path), reason=refused)
            writer.close()
            return
        self._writer = writer
        self._reading = asyncio.create_task(self._read(reader))
        self.ready.set()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand each answer to the request it answers; a broken channel ends them all."""
        try:
            while True:
                frame = decode(await self._frame(reader))
                if not isinstance(frame, ServeAnswer):
                    raise ValueError("the replica sent what is no answer")
                future = self._pending.pop(frame.id, None)
                if future is None and frame.id in self._abandoned:
                    self._abandoned.discard(frame.id)  # a run() past its time, answered late
                    continue
                if future is None:
                    raise ValueError("the replica answered out of turn")
                if not future.done():
                    future.set_result(frame)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            if not self.closed.is_set():
                log.warning("serve_channel_broken", path=str(self.path), error=str(exc))
            self._shut()

    def _shut(self) -> None:
        self.closed.set()
        self.over.set()
        if self._writer is not None:
            self._writer.close()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"a frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        return await reader.readexactly(size)

    async def request(
        self, body: bytes, timeout: float, deadline: float | None = None
    ) -> tuple[int, bytes]:
        """The replica's answer to one request: (HTTP status, body). ``deadline``
        (``time.monotonic()``) is when the caller gives up: a request still waiting then is
        dropped (504) rather than computed."""
        if self.closed.is_set() or self._writer is None:
            return 503, _error("the replica is not serving")
        if self.stopping.is_set():
            return _restarting()
        if self._admitted >= 2 * self.workers:
            return 429, _error(
                f"the replica is busy: {self.workers} requests running and {self.workers}"
                " waiting (max_concurrent_requests)"
            )
        self._admitted += 1
        self._idle.clear()
        try:
            return await self._queued(body, timeout, deadline)
        finally:
            self._admitted -= 1
            if not self._admitted:
                self._idle.set()

    async def _queued(
        self, body: bytes, timeout: float, deadline: float | None
    ) -> tuple[int, bytes]:
        wait = self.queue_wait
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        try:
            if not self._room.locked():
                await self._room.acquire()
            elif wait <= 0:
                raise TimeoutError
            elif not await self._worker(wait):  # a run() overran meanwhile: nothing ran
                return _restarting()
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                return 504, _error("the caller gave up while the request waited for the replica")
            return 503, _error(f"no worker of the replica was free within {self.queue_wait:g} s")
        stuck = False
        try:
            status, answer, stuck = await self._ask(body, timeout, deadline)
            return status, answer
        finally:
            if not stuck:  # a run() past its time keeps its worker busy
                self._room.release()

    async def _worker(self, wait: float) -> bool:
        """Wait for a free worker (True: taken) until the channel stops (False: a ``run()``
        overran, and its worker is never freed), for at most ``wait`` seconds (TimeoutError)."""
        taking = asyncio.ensure_future(self._room.acquire())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait(
                [taking, stopping], timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            if not taking.cancel():  # taken just now: given back
                self._room.release()
            raise
        finally:
            stopping.cancel()
        if not taking.cancel():  # done: a worker is this request's (cancel() says False)
            return True
        if self.stopping.is_set():
            return False
        raise TimeoutError

    async def _ask(
        self, body: bytes, timeout: float, deadline: float | None
    ) -> tuple[int, bytes, bool]:
        """(status, body, whether run() overran: its worker is still taken)."""
        writer = self._writer
        if writer is None or self.closed.is_set():
            return 503, _error("the replica is not serving"), False
        if self.stopping.is_set():
            return (*_restarting(), False)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            message = "the caller gave up while the request waited for the replica"
            return 504, _error(message), False
        rid = next(self._ids)
        future: asyncio.Future[ServeAnswer] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        until = 0.0 if left is None else time.time() + left
        try:
            writer.write(encode(ServeRequest(id=rid, body=body, deadline=until)))
            await writer.drain()
            answer = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:  # run() is stuck in a worker: this replica is done, once the
            # others in its hands are answered
            if not self.closed.is_set():
                self._abandoned.add(rid)
            self.stopping.set()
            self.over.set()
            return 504, _error(f"run() took longer than {timeout:g} s"), True
        except OSError:
            self._shut()
            return 503, _error("the replica stopped while answering"), False
        except asyncio.CancelledError:
            if not (future.cancelled() and self.closed.is_set()):
                self._abandoned.add(rid)  # dropped (the relay past its grace): its answer is
                raise  # no protocol error when it comes
            return 503, _error("the replica stopped while answering"), False
        finally:
            self._pending.pop(rid, None)
        if answer.status not in REPLICA_STATUSES:  # only the agent says "nothing ran"
            message = f"the replica answered status {answer.status}, which a replica may not"
            return 502, _error(message), False
        return answer.status, answer.body, False

    async def idle(self) -> None:
        """Return once no request is in the replica's hands or waiting for it."""
        await self._idle.wait()

    async def close(self) -> None:
        self._shut()
        self._launched.set()  # a connection held for the launch is refused now
        if self._server is not None:
            self._server.close()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        with contextlib.suppress(OSError):
            self.path.unlink()


class RequestStats:
    """What a replica answered since the last look: how many requests, their total time, and
    how many got each status. Its agent logs them as the replica's run metrics
    (``requests``, ``latency_ms_total``, ``status_<code>``), which ``endpoint show`` adds up
    per deployment."""

    def __init__(self) -> None:
        self.count = 0
        self.latency_ms = 0.0
        self.statuses: Counter[int] = Counter()
        self.step = 0

    def add(self, status: int, seconds: float) -> None:
        self.count += 1
        self.latency_ms += seconds * 1000
        self.statuses[status] += 1

    def take(self) -> list[MetricPoint]:
        """The points of what was counted (none if nothing was), and a fresh count."""
        if not self.count:
            return []
        now, step = time.time(), self.step
        points = [
            MetricPoint(name="requests", kind="scalar", value=self.count, step=step, time=now),
            MetricPoint(
                name="latency_ms_total", kind="scalar", value=self.latency_ms, step=step, time=now
            ),
        ]
        points += [
            MetricPoint(name=f"status_{code}", kind="scalar", value=n, step=step, time=now)
            for code, n in sorted(self.statuses.items())
        ]
        self.count, self.latency_ms, self.statuses = 0, 0.0, Counter()
        self.step += 1
        return points


class Relay:
    """A replica's subscription to its deployment's queue group; each request is answered in
    a task of its own (the replica may hold several at once)."""

    def __init__(self) -> None:
        self.sub: Any = None
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        """No more requests: those already delivered are answered."""
        await self.sub.drain()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def unsubscribe(self) -> None:
        """No more requests, and those being answered are dropped."""
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def until_acknowledged(
    send: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    passing: Callable[[CairnError], bool],
    first_s: float = 0.5,
    most_s: float = 30.0,
) -> bool:
    """Send until the receiver acknowledges (True), refuses for good (False) or ``stop`` is
    set (False). A refusal that ``passing`` calls passing (the receiver away, a lost race)
    is sent again after ``first_s``, doubling up to ``most_s``. The command keeps its id, so
    the receiver records it once however often it arrives."""
    delay = first_s
    while not stop.is_set():
        try:
            await send()
            return True
        except CairnError as exc:
            if not passing(exc):
                log.warning("report_refused", error=exc.message)
                return False
            log.info("report_retried", error=exc.message, delay_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, most_s)
    return False


async def publish_answer(
    nc: NATS, reply: str, status: int, body: bytes, *, unrun: bool = False
) -> None:
    """The answer on ``reply``: one message when it fits the server's ``max_payload``, else
    in chunks (``Cairn-Chunk``: index, ``Cairn-Chunks``: how many), in order. ``unrun``:
    nothing ran (``Cairn-Unrun: 1``; the agent's own small answers only)."""
    size = max(nc.max_payload - CHUNK_HEADROOM, CHUNK_HEADROOM)
    if len(body) <= size:
        headers = {STATUS_HEADER: str(status)}
        if unrun:
            headers[UNRUN_HEADER] = "1"
        await nc.publish(reply, body, headers=headers)
        return
    count = -(-len(body) // size)
    if count > MAX_ANSWER_CHUNKS:  # a server whose max_payload is tiny: say so
        message = f"the answer needs {count} messages, more than {MAX_ANSWER_CHUNKS}"
        await nc.publish(reply, _error(message), headers={STATUS_HEADER: "500"})
        return
    for index in range(count):
        headers = {STATUS_HEADER: str(status), CHUNK_HEADER: str(index), CHUNKS_HEADER: str(count)}
        await nc.publish(reply, body[index * size : (index + 1) * size], headers=headers)


def deadline_of(headers: dict[str, str] | None) -> float | None:
    """When the caller gives up (``time.monotonic()``), from its ``Cairn-Timeout-Ms``."""
    raw = (headers or {}).get(TIMEOUT_HEADER, "")
    try:
        ms = float(raw)
    except ValueError:
        return None
    return time.monotonic() + ms / 1000 if ms >= 0 else None


async def relay(
    nc: NATS,
    workspace: str,
    spec: ReplicaSpec,
    channel: ReplicaChannel,
    stats: RequestStats | None = None,
) -> Relay:
    """Subscribe to the deployment's requests in its queue group and answer each from the
    replica (counted in ``stats``); returns the :class:`Relay` (drain it when the replica
    ends)."""
    relayed = Relay()

    async def answer(msg: Any) -> None:
        started = time.monotonic()
        deadline = deadline_of(msg.headers)
        status, body = await channel.request(msg.data, spec.request_timeout_s, deadline)
        if stats is not None:
            stats.add(status, time.monotonic() - started)
        if deadline is not None and status == 504 and time.monotonic() >= deadline:
            return  # nobody is waiting for it
        try:  # a 429 is the channel's own (a replica's is 502 by now): nothing ran
            await publish_answer(nc, msg.reply, status, body, unrun=status == 429)
        except Exception as exc:  # the caller is gone, or the connection is away
            log.warning("serve_reply_failed", deployment=spec.deployment, error=repr(exc))

    async def on_request(msg: Any) -> None:
        if not msg.reply or not msg.reply.startswith(f"_INBOX_{SCORER_USER}."):
            # only the gateway's scoring connection asks, on its own inbox: an answer (the
            # user's run() output) is never published on a subject a sender chose
            log.warning("serve_request_dropped", deployment=spec.deployment)
            return
        relayed.spawn(answer(msg))

    subject = subjects.serve(workspace, spec.endpoint, spec.deployment)
    relayed.sub = await nc.subscribe(subject, queue=QUEUE, cb=on_request)
    return relayed
