"""The sync facade's engine: one background event loop per process (a daemon thread) that runs
the async core; the facade's methods hand coroutines to it and wait. After ``fork`` the child
starts a loop of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from cairn.bus import Connection, connect
from cairn.sdk._async import AsyncWorkspace
from cairn.settings import Settings, load_settings

__all__ = ["WorkspaceBase"]

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _Runtime:
    """One event loop thread per process."""

    _lock = threading.Lock()
    _instance: _Runtime | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cairn-sdk", daemon=True)
        self.thread.start()
        #: the cores this process opened, each with the connection it owns
        self.opened: list[tuple[AsyncWorkspace, Connection]] = []

    @classmethod
    def get(cls) -> _Runtime:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("the sync SDK cannot be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except KeyboardInterrupt:  # Ctrl-C stops the call itself (a wait, a bar), not just this
            future.cancel()
            raise

    def shutdown(self) -> None:
        """At exit: flush what runs still hold (bounded), leave the rest in the spool."""

        async def close_all() -> None:
            for core, conn in self.opened:
                await core.close(timeout=20)
                await conn.close()

        if self.pid == os.getpid() and self.opened:
            try:
                self.run(close_all(), timeout=60)
            except Exception as exc:  # exiting: report, never raise
                print(f"cairn: could not flush at exit: {exc!r}", file=sys.stderr)


@atexit.register
def _flush_at_exit() -> None:
    if _Runtime._instance is not None:
        _Runtime._instance.shutdown()


class WorkspaceBase:
    """A workspace connected on first use: its async core (:attr:`core`) and a way to run the
    core's coroutines from sync code. Every facade class holds one; ``Workspace`` adds the
    Azure ML collections (``ws.experiments``, ``ws.models``...)."""

    def __init__(self, settings: Settings | None = None, name: str | None = None) -> None:
        self.settings = settings or load_settings()
        self.name = name or self.settings.workspace
        self._core: AsyncWorkspace | None = None
        self._lock = threading.Lock()

    @property
    def core(self) -> AsyncWorkspace:
        with self._lock:
            if self._core is None:
                runtime = _Runtime.get()

                async def open_core() -> tuple[AsyncWorkspace, Connection]:
                    conn = await connect(self.settings, name="cairn-sdk")
                    return AsyncWorkspace(conn, self.name, self.settings), conn

                opened = runtime.run(open_core())
                runtime.opened.append(opened)
                self._core = opened[0]
            return self._core

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the async core on the SDK's loop and wait for its result."""
        _ = self.core
        return _Runtime.get().run(coro)

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r})"
