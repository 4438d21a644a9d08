"""Connecting to NATS: reconnect forever, credentials, and permission errors made visible.

nats-py reports a permissions violation only to ``error_cb`` while the request itself times
out; :class:`Connection` remembers recent violations so a timeout on that subject becomes
``PermissionDenied`` instead of a bare timeout.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from cairn.errors import Unavailable
from cairn.log import get_logger
from cairn.settings import Settings

__all__ = ["Connection", "connect", "per_client"]

log = get_logger("cairn.bus")
T = TypeVar("T")
#: what the parts of one process share per NATS client (a ``Connection`` is a value; its
#: client is the connection itself)
_PER_CLIENT: weakref.WeakKeyDictionary[NATS, dict[Any, Any]] = weakref.WeakKeyDictionary()
_VIOLATION = re.compile(r'permissions violation for (?:publish|subscription) to "?([^"\s]+)"?')


@dataclass
class Connection:
    nc: NATS
    js: JetStreamContext
    settings: Settings
    _violations: dict[str, float] = field(default_factory=dict)

    def note_error(self, err: Exception) -> None:
        match = _VIOLATION.search(str(err))
        if match:
            self._violations[match.group(1)] = time.monotonic()

    def denied(self, subject: str, within_s: float = 60.0) -> bool:
        at = self._violations.get(subject)
        return at is not None and time.monotonic() - at < within_s

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def close(self) -> None:
        """Drain (finish in-flight work) when connected; otherwise just close."""
        if self.nc.is_closed:
            return
        try:
            if self.nc.is_connected:
                await self.nc.drain()
                return
        except Exception as exc:  # lost mid-drain: nothing left to flush
            log.debug("drain_failed", error=repr(exc))
        try:
            await self.nc.close()
        except Exception as exc:  # the transport is already gone
            log.debug("close_failed", error=repr(exc))


async def connect(
    settings: Settings, *, name: str = "cairn", connect_timeout: float = 5.0
) -> Connection:
    """Connect with the settings' URL and credentials; raise ``Unavailable`` if unreachable."""
    holder: list[Connection] = []

    async def error_cb(err: Exception) -> None:
        if holder:
            holder[0].note_error(err)
        log.warning("nats_error", error=str(err))

    async def disconnected_cb() -> None:
        if holder and not (holder[0].nc.is_closed or holder[0].nc.is_draining):
            log.warning("nats_disconnected", url=settings.nats_url)

    async def reconnected_cb() -> None:
        log.info("nats_reconnected")

    options: dict[str, Any] = {
        "servers": [u.strip() for u in settings.nats_url.split(",")],
        "name": name,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    elif settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    try:
        nc = await nats.connect(**options)
    except Exception as exc:  # nats-py raises several unrelated types here
        raise Unavailable(f"cannot connect to NATS at {settings.nats_url}: {exc}") from exc
    conn = Connection(nc=nc, js=nc.jetstream(timeout=settings.request_timeout), settings=settings)
    holder.append(conn)
    return conn


def per_client(conn: Connection, key: Any, make: Callable[[], T]) -> T:
    """The one value under ``key`` for ``conn``'s NATS client, made on first use: how the
    services of one process share an aggregate cache or a read-model feed."""
    shared = _PER_CLIENT.setdefault(conn.nc, {})
    if key not in shared:
        shared[key] = make()
    value: T = shared[key]
    return value
