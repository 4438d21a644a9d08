"""The gateway's connections: one per signed-in user, made with that user's own credentials.

The gateway holds no credentials of its own. A browser session or an API token names a user
and their password; the first request opens a NATS connection as that user (the server checks
the password and attests the user on every request, as for the SDK), later requests reuse it,
and an idle one is closed. A wrong password is refused by the server, and remembered for a
moment so that a flood of bad logins does not become a flood of connection attempts. A
connection is used only while it is connected: when the server drops one (a removed person, a
revoked API token: ``cairn user remove``, ``cairn token revoke``), the next request opens it
again, the server refuses it, and the request gets 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, field

import msgspec

from cairn.bus import Connection, connect
from cairn.errors import Unauthenticated
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.tokens import person_of

__all__ = ["Pool", "Principal"]

log = get_logger("cairn.gateway")


@dataclass
class Principal:
    """Who a request acts as: the server user, the person behind it, their connection."""

    user: str
    conn: Connection
    #: "session" (a browser's cookie) or "token" (``Authorization: Bearer``)
    via: str
    #: the highest stream sequence this user's commands reached, per workspace, passed as
    #: ``min_seq`` so that a page shows what its user just did
    seen: dict[str, int] = field(default_factory=dict)
    #: the same for METRICS (the sequences of ``metrics.log`` replies), per workspace
    metrics_seen: dict[str, int] = field(default_factory=dict)
    #: when the MLflow API last renewed each run it started (``cairn.services.mlflow``)
    renewed: dict[str, float] = field(default_factory=dict)

    @property
    def person(self) -> str:
        return person_of(self.user)


@dataclass
class _Entry:
    conn: Connection
    digest: bytes
    used: float
    seen: dict[str, int] = field(default_factory=dict)
    metrics_seen: dict[str, int] = field(default_factory=dict)
    renewed: dict[str, float] = field(default_factory=dict)


def _serves(entry: _Entry | None, digest: bytes) -> bool:
    """Whether ``entry`` may serve a request made with the credentials of ``digest``: it was
    opened with them and is connected. One the server closed or dropped (its user removed or
    its token revoked by a config reload, or the server gone) is opened again, which the
    server refuses for a user it no longer knows."""
    return (
        entry is not None
        and entry.conn.nc.is_connected
        and hmac.compare_digest(entry.digest, digest)
    )


class Pool:
    """Connections by user; each checked against the password it was opened with."""

    def __init__(self, settings: Settings, *, idle_s: float = 300.0, most: int = 512) -> None:
        self.settings = settings
        self.idle_s = idle_s
        self.most = most
        self._entries: dict[str, _Entry] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        #: (user, digest) -> when a refusal stops being remembered
        self._refused: dict[tuple[str, bytes], float] = {}
        self._reaper: asyncio.Task[None] | None = None

    def _digest(self, user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}".encode()).digest()

    async def principal(self, user: str, password: str, via: str) -> Principal:
        """The connection of ``user``, opened with ``password`` when none is (or when the one
        there was opened with another password); ``Unauthenticated`` when the server refuses
        them."""
        digest = self._digest(user, password)
        if self._refused.get((user, digest), 0.0) > time.monotonic():
            raise Unauthenticated("wrong user name or password")
        entry = self._entries.get(user)
        if not _serves(entry, digest):
            lock = self._opening.setdefault(user, asyncio.Lock())
            async with lock:
                entry = self._entries.get(user)
                if not _serves(entry, digest):
                    entry = await self._open(user, password, digest)
        assert entry is not None
        entry.used = time.monotonic()
        return Principal(
            user=user,
            conn=entry.conn,
            via=via,
            seen=entry.seen,
            metrics_seen=entry.metrics_seen,
            renewed=entry.renewed,
        )

    async def _open(self, user: str, password: str, digest: bytes) -> _Entry:
        settings = msgspec.structs.replace(
            self.settings, nats_user=user, nats_password=password, nats_creds=None
        )
        try:
            conn = await connect(settings, name=f"cairn-gateway:{user}")
        except Unauthenticated:
            self._refused[(user, digest)] = time.monotonic() + 5.0
            log.info("login_refused", user=user)
            old = self._entries.get(user)
            if old is not None and hmac.compare_digest(old.digest, digest):
                await self.forget(user)  # these credentials are no longer good (revoked)
            raise Unauthenticated("wrong user name or password") from None
        old = self._entries.pop(user, None)
        if old is not None:  # a new password (or a re-made token): the old one may be revoked
            await old.conn.close()
        entry = _Entry(conn=conn, digest=digest, used=time.monotonic())
        self._entries[user] = entry
        if len(self._entries) > self.most:
            await self._close_idle(float("inf"), keep=self.most)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())
        return entry

    def touch(self, user: str) -> None:
        """``user``'s connection is in use (a live stream holds it): not idle now."""
        entry = self._entries.get(user)
        if entry is not None:
            entry.used = time.monotonic()

    async def forget(self, user: str) -> None:
        """Close ``user``'s connection (their last session signed out)."""
        entry = self._entries.pop(user, None)
        if entry is not None:
            await entry.conn.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_s, 30.0))
            await self._close_idle(self.idle_s)
            now = time.monotonic()
            self._refused = {k: v for k, v in self._refused.items() if v > now}

    async def _close_idle(self, idle_s: float, keep: int | None = None) -> None:
        now = time.monotonic()
        by_age = sorted(self._entries.items(), key=lambda item: item[1].used)
        excess = len(by_age) - keep if keep is not None else 0
        for user, entry in by_age:
            closed = entry.conn.nc.is_closed
            if closed or now - entry.used >= idle_s or excess > 0:
                excess -= 1
                self._entries.pop(user, None)
                if not closed:
                    await entry.conn.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        entries, self._entries = self._entries, {}
        await asyncio.gather(*(e.conn.close() for e in entries.values()))
