"""One value per run in a KV bucket, mirrored in every process that reads it.

Some facts are signs of life, not decisions: a job's lease renewals, an interactive run's
heartbeats. They are kept in a KV bucket (key ``<workspace>.<run>``), never appended to
EVENTS, and every replica of the service that reads them follows the bucket with a watcher,
so whichever replica wrote a value, every replica sees it.

Each key's revision is kept with the local monotonic time at which this process first saw it
(``changed``): how long a key has gone unchanged is measured on this process's own clock, never
by comparing a writer's wall clock with ours. A value is only ever replaced by a newer
revision, whichever path (the watcher or a read) brings it. ``leader`` reads a key from the
stream's leader (``STREAM.MSG.GET``), not by a direct get that any replica, a stale one
included, may answer; ``update`` writes it only if its revision is still the one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Generic, TypeVar

import msgspec
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)

from cairn.bus._connect import Connection
from cairn.bus._store import TRANSIENT
from cairn.errors import ConcurrencyConflict, Unavailable

__all__ = ["RunKeyMirror"]

T = TypeVar("T")


class RunKeyMirror(Generic[T]):
    """The bucket ``bucket`` of ``value_type`` values, and this process's mirror of it
    (``values``, by workspace and run)."""

    def __init__(self, conn: Connection, bucket: str, value_type: type[T]) -> None:
        self.conn, self.bucket, self.value_type = conn, bucket, value_type
        self.values: dict[tuple[str, str], T] = {}
        #: per key, the newest revision seen (a deletion's included) and the local monotonic
        #: time at which it was first seen
        self.changed: dict[tuple[str, str], tuple[int, float]] = {}
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
            deleted = entry.operation in ("DEL", "PURGE") or not entry.value
            self._seen((ws, run_id), int(entry.revision or 0), None if deleted else entry.value)

    def _seen(self, key: tuple[str, str], revision: int, data: bytes | None) -> bool:
        """Take revision ``revision`` of ``key`` (``data`` None: deleted) unless a newer one is
        already here; whether it was taken."""
        known = self.changed.get(key)
        if known is not None and known[0] >= revision:
            return False
        self.changed[key] = (revision, time.monotonic())
        value = self._decode(data)
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        return True

    def _decode(self, data: bytes | None) -> T | None:
        if not data:
            return None
        try:
            return msgspec.json.decode(data, type=self.value_type)
        except msgspec.DecodeError:
            return None

    def _subject(self, ws: str, run_id: str) -> str:
        return f"$KV.{self.bucket}.{ws}.{run_id}"

    async def put(self, ws: str, run_id: str, value: T) -> None:
        """Keep ``value`` here and in the bucket; ``Unavailable`` when the bucket does not
        take it now (no answer, or no leader during an election: the next value will)."""
        data = msgspec.json.encode(value)
        try:
            revision = int(await self._kv.put(f"{ws}.{run_id}", data))
        except TRANSIENT as exc:
            raise Unavailable(f"bucket {self.bucket} did not take {ws}.{run_id}: {exc!r}") from exc
        self._seen((ws, run_id), revision, data)

    async def read(self, ws: str, run_id: str) -> T | None:
        """The bucket's own value (the mirror may lag); None when there is none or it does
        not decode. Any other failure to read it raises."""
        try:
            entry = await self._kv.get(f"{ws}.{run_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        self._seen((ws, run_id), int(entry.revision or 0), entry.value)
        return self._decode(entry.value)

    async def leader(self, ws: str, run_id: str) -> tuple[T | None, int]:
        """The key's value (None: none, deleted, or not decodable) and revision (0: never
        written), as the bucket's stream leader has them; the mirror takes them if newer.
        Raises when the leader cannot be asked (no leader, no answer)."""
        try:
            msg = await self.conn.js.get_msg(
                f"KV_{self.bucket}", subject=self._subject(ws, run_id), direct=False
            )
        except NotFoundError:
            return None, 0
        headers = msg.headers or {}
        deleted = headers.get("KV-Operation") in ("DEL", "PURGE")
        data = None if deleted else msg.data
        self._seen((ws, run_id), int(msg.seq or 0), data)
        return self._decode(data), int(msg.seq or 0)

    async def update(self, ws: str, run_id: str, value: T, last: int) -> int:
        """Write ``value`` if the key's revision is still ``last`` (0: never written); its new
        revision. ``ConcurrencyConflict`` when another write came first."""
        data = msgspec.json.encode(value)
        try:
            revision = int(await self._kv.update(f"{ws}.{run_id}", data, last=last))
        except KeyWrongLastSequenceError as exc:
            raise ConcurrencyConflict(
                f"{self.bucket} key {ws}.{run_id} changed after revision {last}"
            ) from exc
        self._seen((ws, run_id), revision, data)
        return revision

    async def delete(self, ws: str, run_id: str) -> None:
        """Forget the run's value, here and in the bucket (best effort: it may be gone)."""
        self.values.pop((ws, run_id), None)
        with contextlib.suppress(Exception):
            await self._kv.delete(f"{ws}.{run_id}")
