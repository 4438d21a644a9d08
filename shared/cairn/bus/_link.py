"""A job's only way out: request/reply through its agent, over a Unix socket.

A job's process holds no NATS credentials. Its agent opens a socket for the attempt (the
path is in ``CAIRN_AGENT_SOCKET``) and forwards each request it allows — the commands that
concern the job's own run, the queries of its workspace — with the agent's own connection
(``cairn.services.agent._gate``). Closing the socket at the attempt's end revokes it.

:class:`AgentLink` presents that socket as the part of a NATS client the SDK uses (``request``,
``is_connected``, ``close``), so ``cairn.bus.connect`` hands the SDK's async core an ordinary
:class:`~cairn.bus.Connection` and nothing above it knows the difference. Everything else a
NATS client does (subscribe, publish, JetStream) is refused: a job has no business there.

Frames are msgpack, each preceded by its length (4 bytes, big-endian). Requests carry an id;
answers may come back in any order (uploads keep several chunks in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cairn.errors import PermissionDenied, Unavailable

__all__ = [
    "MAX_FRAME_BYTES",
    "AgentLink",
    "LinkAnswer",
    "LinkRequest",
    "read_frame",
    "write_frame",
]

#: the largest frame either side accepts (a query's reply may be this large; requests are
#: bounded far lower by ``MAX_REQUEST_BYTES`` and the upload chunk size)
MAX_FRAME_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
#: what the link reports as its largest payload (what the SDK sizes uploads by)
_MAX_PAYLOAD = 1024 * 1024


class LinkRequest(msgspec.Struct, frozen=True, array_like=True):
    id: int
    subject: str
    data: bytes
    headers: dict[str, str] | None
    timeout: float


class LinkAnswer(msgspec.Struct, frozen=True, array_like=True):
    """A reply's bytes and headers, or why there is none: ``timeout`` or ``no_responders``
    (which the client retries as it would over NATS)."""

    id: int
    data: bytes = b""
    headers: dict[str, str] | None = None
    failure: str | None = None


_encoder = msgspec.msgpack.Encoder()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One frame's body; ``IncompleteReadError`` at the end of the stream."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return await reader.readexactly(size)


def write_frame(writer: asyncio.StreamWriter, item: LinkRequest | LinkAnswer) -> None:
    body = _encoder.encode(item)
    writer.write(_LENGTH.pack(len(body)) + body)


class AgentLink(NATS):
    """The request/reply half of a NATS client, spoken to the agent over a Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[LinkAnswer]] = {}
        self._ids = itertools.count(1)
        self._open = False  # the socket is up (the agent may drop it)
        self._closed = False  # this side closed it (what ``is_closed`` says, as nats-py's)
        self._decoder = msgspec.msgpack.Decoder(LinkAnswer)

    async def open(self) -> None:
        try:
            reader, self._writer = await asyncio.open_unix_connection(self._path)
        except OSError as exc:
            raise Unavailable(
                f"cannot reach this job's agent at {self._path} ({exc.strerror or exc}): the"
                " attempt has ended, or this process was not started by an agent"
            ) from exc
        self._open = True
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                answer = self._decoder.decode(await read_frame(reader))
                waiter = self._waiting.pop(answer.id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except (asyncio.IncompleteReadError, OSError, ValueError, msgspec.DecodeError):
            pass
        finally:
            self._open = False
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(Unavailable("this job's agent closed the link"))
            self._waiting.clear()

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        if not self._open or self._writer is None:
            raise Unavailable("this job's agent closed the link (the attempt has ended)")
        ident = next(self._ids)
        waiter: asyncio.Future[LinkAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        sent = {str(k): str(v) for k, v in headers.items()} if headers else None
        write_frame(self._writer, LinkRequest(ident, subject, payload, sent, timeout))
        try:
            # the agent answers a timeout itself; this bounds a wedged agent
            answer = await asyncio.wait_for(waiter, timeout + 5)
        except TimeoutError as exc:
            raise NatsTimeout from exc
        finally:
            self._waiting.pop(ident, None)
        if answer.failure == "timeout":
            raise NatsTimeout
        if answer.failure == "no_responders":
            raise NoRespondersError
        if answer.failure is not None:
            raise PermissionDenied(answer.failure)
        return Msg(_client=self, subject=subject, data=answer.data, headers=answer.headers)

    async def subscribe(self, subject: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied(f"a job may not subscribe ({subject}): it talks through its agent")

    async def publish(self, subject: str, *args: Any, **kwargs: Any) -> None:
        raise PermissionDenied(f"a job may not publish ({subject}): it talks through its agent")

    @property
    def is_connected(self) -> bool:
        return self._open

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def max_payload(self) -> int:
        return _MAX_PAYLOAD

    async def drain(self) -> None:
        await self.close()

    async def close(self) -> None:
        self._open, self._closed = False, True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            await self._reader_task
