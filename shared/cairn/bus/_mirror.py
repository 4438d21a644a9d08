"""One value per run in a KV bucket, mirrored in every process that reads it.

Some facts are signs of life, not decisions: a job's lease renewals, an interactive run's
heartbeats. They are kept in a KV bucket (key ``<workspace>.<run>``), never appended to
EVENTS, and every replica of the service that reads them follows the bucket with a watcher,
so whichever replica wrote a value, every replica sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic, TypeVar

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from cairn.bus._connect import Connection
from cairn.bus._store import TRANSIENT
from cairn.errors import Unavailable

__all__ = ["RunKeyMirror"]

T = TypeVar("T")


class RunKeyMirror(Generic[T]):
    """The bucket ``bucket`` of ``value_type`` values, and this process's mirror of it
    (``values``, by workspace and run)."""

    def __init__(self, conn: Connection, bucket: str, value_type: type[T]) -> None:
        self.conn, self.bucket, self.value_type = conn, bucket, value_type
        self.values: dict[tuple[str, str], T] = {}
        self._kv: Any = None
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await self.conn.js.key_value(self.bucket)
        self._watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # the end of the initial values
                continue
            ws, _, run_id = entry.key.partition(".")
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.values.pop((ws, run_id), None)
                continue
            with contextlib.suppress(msgspec.DecodeError):
                self.values[(ws, run_id)] = msgspec.json.decode(entry.value, type=self.value_type)

    async def put(self, ws: str, run_id: str, value: T) -> None:
        """Keep ``value`` here and in the bucket; ``Unavailable`` when the bucket does not
        take it now (no answer, or no leader during an election: the next value will)."""
        self.values[(ws, run_id)] = value
        try:
            await self._kv.put(f"{ws}.{run_id}", msgspec.json.encode(value))
        except TRANSIENT as exc:
            raise Unavailable(f"bucket {self.bucket} did not take {ws}.{run_id}: {exc!r}") from exc

    async def read(self, ws: str, run_id: str) -> T | None:
        """The bucket's own value (the mirror may lag); None when there is none or it does
        not decode. Any other failure to read it raises."""
        try:
            entry = await self._kv.get(f"{ws}.{run_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        try:
            value = msgspec.json.decode(entry.value, type=self.value_type)
        except msgspec.DecodeError:
            return None
        self.values[(ws, run_id)] = value
        return value

    async def delete(self, ws: str, run_id: str) -> None:
        """Forget the run's value, here and in the bucket (best effort: it may be gone)."""
        self.values.pop((ws, run_id), None)
        with contextlib.suppress(Exception):
            await self._kv.delete(f"{ws}.{run_id}")
