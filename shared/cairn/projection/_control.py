"""Read models answer for themselves over NATS: their state and quarantined events
(``cairn status``), and a retry of those events (``cairn projection retry``).

Every process that runs projections subscribes (once per connection, while any runs) to
``cairn.svc.projection.*`` without a queue group: each instance holds its own SQLite files, so
each answers. A client asks the state first, so it knows which instances must answer a retry
and can name one that did not.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from nats.errors import TimeoutError as NatsTimeout

from cairn.bus import Connection, per_client
from cairn.errors import NotFound, Unavailable
from cairn.log import get_logger
from cairn.proto.subjects import (
    PROJECTION_CONTROL,
    PROJECTION_RETRY,
    PROJECTION_STATUS,
    PROJECTION_VERIFY,
)

if TYPE_CHECKING:
    from cairn.projection._engine import ProjectionRunner

__all__ = ["control_for", "read_model_states", "retry_quarantined", "verify_read_models"]

log = get_logger("cairn.projection")


class _Control:
    """The responder of one connection for the runners that follow the log through it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.runners: list[ProjectionRunner[Any]] = []
        self.sub: Any = None
        self.verify_sub: Any = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lock = asyncio.Lock()

    async def join(self, runner: ProjectionRunner[Any]) -> None:
        self.runners.append(runner)
        async with self._lock:
            if self.sub is None:
                self.sub = await self.conn.nc.subscribe(PROJECTION_CONTROL, cb=self._on_msg)
                self.verify_sub = await self.conn.nc.subscribe(PROJECTION_VERIFY, cb=self._on_msg)

    async def leave(self, runner: ProjectionRunner[Any]) -> None:
        if runner in self.runners:
            self.runners.remove(runner)
        async with self._lock:
            if not self.runners and self.sub is not None:
                subs, self.sub, self.verify_sub = [self.sub, self.verify_sub], None, None
                for sub in subs:
                    try:
                        await sub.unsubscribe()
                    except Exception as exc:  # the connection may already be closing
                        log.debug("unsubscribe_failed", error=str(exc))

    async def _on_msg(self, msg: Any) -> None:
        if not msg.reply:
            return
        body: dict[str, Any] = {"instance": self.instance}
        try:
            if msg.subject == PROJECTION_STATUS:
                body["read_models"] = [r.state() for r in list(self.runners)]
            elif msg.subject in (PROJECTION_RETRY, PROJECTION_VERIFY):
                name = json.loads(msg.data or b"{}").get("name")
                chosen = [r for r in list(self.runners) if name in (None, r.projection.name)]
                if not chosen:
                    return  # not asked of this instance
                if msg.subject == PROJECTION_RETRY:
                    body["read_models"] = [await r.retry() for r in chosen]
                else:
                    body["read_models"] = [await r.verify() for r in chosen]
            else:
                return
        except Exception as exc:  # reported to the asker, and here
            log.exception("projection_control_failed", subject=msg.subject)
            body["error"] = f"{type(exc).__name__}: {exc}"
        try:
            await msg.respond(json.dumps(body).encode())
        except Exception as exc:  # the asker may have gone
            log.warning("reply_failed", subject=msg.subject, error=str(exc))


def control_for(conn: Connection) -> _Control:
    return per_client(conn, _Control, lambda: _Control(conn))


async def _gather(
    conn: Connection,
    subject: str,
    payload: bytes,
    wait_s: float,
    expect: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Every answer to one broadcast within ``wait_s`` (sooner once every instance in
    ``expect`` has answered)."""
    inbox = conn.nc.new_inbox()
    sub = await conn.nc.subscribe(inbox)
    found: list[dict[str, Any]] = []
    waiting = set(expect) if expect is not None else None
    try:
        await conn.nc.publish(subject, payload, reply=inbox)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0 and waiting != set():
            try:
                msg = await sub.next_msg(timeout=left)
            except (TimeoutError, NatsTimeout):
                break
            found.append(json.loads(msg.data))
            if waiting is not None:
                waiting.discard(found[-1].get("instance"))
    finally:
        await sub.unsubscribe()
    return found


def _flatten(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for reply in replies:
        if "error" in reply:
            rows.append({"instance": reply["instance"], "error": reply["error"]})
        for model in reply.get("read_models", []):
            rows.append({**model, "instance": reply["instance"]})
    return sorted(rows, key=lambda r: (r.get("read_model", ""), r["instance"]))


async def read_model_states(conn: Connection, wait_s: float = 0.5) -> list[dict[str, Any]]:
    """Each read model of each instance that answers within ``wait_s``: its position, how
    many events it has quarantined, and the first of them."""
    return _flatten(await _gather(conn, PROJECTION_STATUS, b"", wait_s))


async def retry_quarantined(
    conn: Connection, name: str | None = None, *, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Have every instance apply its quarantined events (of read model ``name``, or all)
    again; what each read model retried, applied, and still holds."""
    states = await read_model_states(conn)
    known = {s["read_model"] for s in states if "read_model" in s}
    if name is not None and name not in known:
        raise NotFound(
            f"no running service holds a read model called {name!r}"
            f" (running: {', '.join(sorted(known)) or 'none'})"
        )
    expected = {s["instance"] for s in states if name in (None, s.get("read_model"))}
    payload = json.dumps({"name": name}).encode()
    replies = await _gather(conn, PROJECTION_RETRY, payload, timeout, expect=expected)
    missing = expected - {r["instance"] for r in replies}
    if missing:
        raise Unavailable(f"no retry answer within {timeout:g}s from {', '.join(sorted(missing))}")
    return _flatten(replies)


async def verify_read_models(
    conn: Connection, name: str | None = None, *, timeout: float = 600.0
) -> list[dict[str, Any]]:
    """Have every instance compare its read models (``name``, or all) with a replay of the
    log to the same position: each one's hashes and the first row that differs."""
    states = await read_model_states(conn)
    known = {s["read_model"] for s in states if "read_model" in s}
    if name is not None and name not in known:
        raise NotFound(
            f"no running service holds a read model called {name!r}"
            f" (running: {', '.join(sorted(known)) or 'none'})"
        )
    expected = {s["instance"] for s in states if name in (None, s.get("read_model"))}
    payload = json.dumps({"name": name}).encode()
    replies = await _gather(conn, PROJECTION_VERIFY, payload, timeout, expect=expected)
    missing = expected - {r["instance"] for r in replies}
    if missing:
        raise Unavailable(f"no answer within {timeout:g}s from {', '.join(sorted(missing))}")
    return _flatten(replies)
