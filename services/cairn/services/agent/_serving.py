"""A serving replica's agent side: the channel to its process, and the relay of the
deployment's requests to it.

The replica holds no NATS connection, as no job does. The agent listens on ``serve.sock`` in
the attempt's gate folder (only the replica's own session may connect); the replica connects
once its ``init()`` returned (:mod:`cairn.serving`). Then, and only then, the agent reports it
ready and subscribes with its own connection to ``cairn.serve.<ws>.<endpoint>.<deployment>``
in the deployment's queue group, relaying each request down the channel and the answer back
with its status in the ``Cairn-Status`` header. So the replica serves exactly its deployment's
requests and can send nothing anywhere but its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.metrics import MetricPoint
from cairn.proto.serving import ReplicaSpec
from cairn.rpc import SCORER_USER
from cairn.services.agent._gate import peer_in_session
from cairn.serving import (
    LENGTH,
    MAX_FRAME_BYTES,
    SOCKET_NAME,
    ServeAnswer,
    ServeHello,
    ServeRequest,
    decode,
    encode,
)

__all__ = ["STATUS_HEADER", "ReplicaChannel", "RequestStats", "relay"]

log = get_logger("cairn.agent")
#: the reply header carrying the HTTP status of an answer
STATUS_HEADER = "Cairn-Status"
#: the queue group of a deployment's replicas (the subject names the deployment)
QUEUE = "replicas"


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class ReplicaChannel:
    """The socket one replica connects to once it is ready; requests go down it one at a
    time (the entry script's ``run()`` is called from one thread)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SOCKET_NAME
        self.session: int | None = None
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def open(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        self.path.chmod(0o600)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None or not peer_in_session(writer, self.session):
            writer.close()
            return
        try:
            frame = decode(await self._frame(reader))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            writer.close()
            return
        if not isinstance(frame, ServeHello):
            writer.close()
            return
        self._reader, self._writer = reader, writer
        self.ready.set()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"a frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        return await reader.readexactly(size)

    async def request(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """The replica's answer to one request: (HTTP status, body)."""
        async with self._lock:
            reader, writer = self._reader, self._writer
            if reader is None or writer is None or self.closed.is_set():
                return 503, _error("the replica is not serving")
            rid = next(self._ids)
            try:
                writer.write(encode(ServeRequest(id=rid, body=body)))
                await writer.drain()
                frame = decode(await asyncio.wait_for(self._frame(reader), timeout))
            except TimeoutError:  # the channel is out of step now: this replica is done
                self.closed.set()
                writer.close()
                return 504, _error(f"run() took longer than {timeout:g} s")
            except (OSError, ValueError, asyncio.IncompleteReadError):
                self.closed.set()
                return 503, _error("the replica stopped while answering")
            if not isinstance(frame, ServeAnswer) or frame.id != rid:
                return 502, _error("the replica answered out of turn")
            return frame.status, frame.body

    async def idle(self) -> None:
        """Return once no request is in the replica's hands (the one there is answered)."""
        async with self._lock:
            pass

    async def close(self) -> None:
        self.closed.set()
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
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


async def relay(
    nc: NATS,
    workspace: str,
    spec: ReplicaSpec,
    channel: ReplicaChannel,
    stats: RequestStats | None = None,
) -> Any:
    """Subscribe to the deployment's requests in its queue group and answer each from the
    replica (counted in ``stats``); returns the subscription (unsubscribe it when the replica
    ends)."""

    async def on_request(msg: Any) -> None:
        if not msg.reply or not msg.reply.startswith(f"_INBOX_{SCORER_USER}."):
            # only the gateway's scoring connection asks, on its own inbox: an answer (the
            # user's run() output) is never published on a subject a sender chose
            log.warning("serve_request_dropped", deployment=spec.deployment)
            return
        started = time.monotonic()
        status, body = await channel.request(msg.data, spec.request_timeout_s)
        if stats is not None:
            stats.add(status, time.monotonic() - started)
        try:
            await nc.publish(msg.reply, body, headers={STATUS_HEADER: str(status)})
        except Exception as exc:  # the caller is gone, or the connection is away
            log.warning("serve_reply_failed", deployment=spec.deployment, error=repr(exc))

    subject = subjects.serve(workspace, spec.endpoint, spec.deployment)
    return await nc.subscribe(subject, queue=QUEUE, cb=on_request)
