"""Phase lines: what the agent tells the person waiting on a job while it prepares it.

Building an environment takes tens of seconds; the person waiting sees its phases in the job's
log stream (``cairn job logs -f``, ``wait_for_completion(show_output=True)``) as lines that
begin with ``[cairn]``, before the job's own output. The attempt sets where lines go for the
duration of a step (:func:`reporting`); the code of the step (a backend, the environment
builder, in a worker thread too: ``asyncio.to_thread`` carries the context) calls
:func:`phase` without knowing about attempts or streams. Outside a step it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType

__all__ = ["PREFIX", "PhaseLines", "phase", "reporting"]

PREFIX = "[cairn] "
_MAX_LINE = 1000
_report: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "cairn_phase_report", default=None
)


def phase(text: str) -> None:
    """Tell the person waiting on the job being prepared what happens now (one line)."""
    report = _report.get()
    text = " ".join(text.split())
    if report is not None and text:
        report(text[:_MAX_LINE])


@contextlib.contextmanager
def reporting(report: Callable[[str], None]) -> Iterator[None]:
    """Within the block (and the threads it starts), :func:`phase` lines go to ``report``."""
    token = _report.set(report)
    try:
        yield
    finally:
        _report.reset(token)


class PhaseLines:
    """Ships phase lines through ``ship`` (the attempt's log stream), in order, from the
    event loop or any thread; ``async with`` waits for the last one on exit."""

    def __init__(self, ship: Callable[[bytes], Awaitable[None]]) -> None:
        self._ship = ship
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, text: str) -> None:
        line = (PREFIX + text + "\n").encode()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, line)

    async def _pump(self) -> None:
        while (line := await self._queue.get()) is not None:
            await self._ship(line)

    async def __aenter__(self) -> PhaseLines:
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # after the lines already handed to the loop (call_soon keeps their order); those of
        # threads still running (a step cut short) are left behind
        self._loop.call_soon(self._queue.put_nowait, None)
        if self._task is not None:
            await self._task
