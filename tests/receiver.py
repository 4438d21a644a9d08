"""A real HTTP receiver for webhook tests: ``asyncio.start_server`` on a loopback port, enough
HTTP/1.1 to read one POST per connection and answer it (or never answer)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

#: what the receiver answers to its n-th request (from 1): a status, or None for no answer
Answer = Callable[[int], int | None]


class Received(NamedTuple):
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, answer: Answer = lambda n: 200) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._release.set()  # held requests end: each handler closes its connection
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=10)
        await self._server.wait_closed()

    async def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """Once at least ``n`` requests arrived."""

        async def enough() -> None:
            while len(self.received) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(headers, body))
            self.changed.set()
            status = self.answer(len(self.received))
            if status is None:  # never answer: hold the connection until the end
                await self._release.wait()
            else:
                head = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                writer.write(head.encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)
