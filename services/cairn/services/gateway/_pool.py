"""The gateway's connections: one per signed-in user, made with that user's own credentials.

The gateway holds no credentials of its own. A browser session or an API token names a user
and their password; the first request opens a NATS connection as that user (the server checks
the password and attests the user on every request, as for the SDK), later requests reuse it.
A request holds its connection from authentication until its response's last byte
(``principal(..., hold=True)`` then :meth:`Pool.release`); one that no request, stream or
download has used for ``idle_s`` is closed, and none in use ever is.

A wrong password is refused by the server, and remembered for a moment (at most
:data:`MOST_REFUSED` of them) so that a flood of bad logins does not become a flood of
connection attempts; a user name refused :data:`FAILURES` times within :data:`FAILURES_S` is
refused outright, without connecting, for :data:`BLOCK_S`. A connection is used only while it
is connected: when the server drops one (a removed person, a revoked API token: ``cairn user
remove``, ``cairn token revoke``), the next request opens it again, the server refuses it, and
the request gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from cairn.bus import Connection, connect
from cairn.errors import Unauthenticated
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.tokens import is_user_name, person_of

__all__ = ["BLOCK_S", "FAILURES", "FAILURES_S", "MOST_REFUSED", "Pool", "Principal"]

log = get_logger("cairn.gateway")

#: how many refused (user, password) pairs are remembered at most (the oldest go first)
MOST_REFUSED = 10_000
#: this many refused sign-ins of one user name within FAILURES_S ...
FAILURES = 5
FAILURES_S = 60.0
#: ... refuse that name, without connecting, for BLOCK_S
BLOCK_S = 30.0
#: how long a refused (user, password) pair is refused without connecting again
REFUSED_S = 5.0


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
    #: how many requests (pages, API calls, streams, downloads) use it now
    inflight: int = 0
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
        #: a lock per user whose connection is being opened, and how many wait on it
        self._opening: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        #: (user, digest) -> when a refusal stops being remembered (oldest first)
        self._refused: dict[tuple[str, bytes], float] = {}
        #: user -> when its recent refusals happened; user -> when its block ends
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._reaper: asyncio.Task[None] | None = None
        #: connections being closed; :meth:`close` waits for them
        self._closing: set[asyncio.Task[None]] = set()

    def _digest(self, user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}".encode()).digest()

    async def principal(
        self, user: str, password: str, via: str, *, hold: bool = False
    ) -> Principal:
        """The connection of ``user``, opened with ``password`` when none is (or when the one
        there was opened with another password); ``Unauthenticated`` when the server refuses
        them. ``hold``: the caller uses it until it calls :meth:`release` (it is not idle
        until then)."""
        self._start_reaper()
        if not is_user_name(user):  # no person's name nor a token's: the server has no such user
            raise Unauthenticated("wrong user name or password")
        digest = self._digest(user, password)
        entry = self._entries.get(user)
        if not _serves(entry, digest):
            self._check_refused(user, digest)
            async with self._opening_lock(user):
                entry = self._entries.get(user)
                if not _serves(entry, digest):
                    self._check_refused(user, digest)
                    entry = await self._open(user, password, digest)
        assert entry is not None
        entry.used = time.monotonic()
        entry.inflight += hold
        return Principal(
            user=user,
            conn=entry.conn,
            via=via,
            seen=entry.seen,
            metrics_seen=entry.metrics_seen,
            renewed=entry.renewed,
        )

    def release(self, principal: Principal) -> None:
        """A request that held ``principal``'s connection (``principal(hold=True)``) ended."""
        entry = self._entries.get(principal.user)
        if entry is not None and entry.conn is principal.conn and entry.inflight > 0:
            entry.inflight -= 1
            entry.used = time.monotonic()

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="cairn-gateway-reaper")

    def _check_refused(self, user: str, digest: bytes) -> None:
        """Refuse, without connecting, a user name that failed too often of late, or
        credentials the server refused a moment ago."""
        now = time.monotonic()
        blocked = self._blocked.get(user, 0.0)
        if blocked > now:
            wait = math.ceil(blocked - now)
            raise Unauthenticated(f"too many failed sign-ins; try again in {wait} s")
        if self._refused.get((user, digest), 0.0) > now:
            raise Unauthenticated("wrong user name or password")

    def _note_refused(self, user: str, digest: bytes) -> None:
        now = time.monotonic()
        self._refused.pop((user, digest), None)
        self._refused[(user, digest)] = now + REFUSED_S
        while len(self._refused) > MOST_REFUSED:
            del self._refused[next(iter(self._refused))]
        failures = self._failures.pop(user, None) or deque(maxlen=FAILURES)
        failures.append(now)
        self._failures[user] = failures  # last: the dict stays oldest first
        while len(self._failures) > MOST_REFUSED:
            del self._failures[next(iter(self._failures))]
        if len(failures) >= FAILURES and now - failures[0] <= FAILURES_S:
            self._blocked[user] = now + BLOCK_S
            failures.clear()
            log.warning("login_blocked", user=user, seconds=BLOCK_S)

    @contextlib.asynccontextmanager
    async def _opening_lock(self, user: str) -> AsyncIterator[None]:
        """The lock that lets one request at a time open ``user``'s connection; dropped once
        no one holds or waits on it (a name tried once leaves nothing behind)."""
        lock, users = self._opening.setdefault(user, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0 and self._opening.get(user, (None,))[0] is lock:
                del self._opening[user]

    async def _open(self, user: str, password: str, digest: bytes) -> _Entry:
        settings = msgspec.structs.replace(
            self.settings, nats_user=user, nats_password=password, nats_creds=None
        )
        try:
            conn = await connect(settings, name=f"cairn-gateway:{user}")
        except Unauthenticated:
            self._note_refused(user, digest)
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
            self._prune(time.monotonic())

    def _prune(self, now: float) -> None:
        """Forget refusals, failures and blocks that no longer count."""
        self._refused = {k: v for k, v in self._refused.items() if v > now}
        self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        self._failures = {
            k: v for k, v in self._failures.items() if v and now - v[-1] <= FAILURES_S
        }

    async def _close_idle(self, idle_s: float, keep: int | None = None) -> None:
        """Close the connections idle for ``idle_s``, and the longest idle beyond ``keep``;
        never one in use (beyond ``keep`` then, until they are idle)."""
        now = time.monotonic()
        by_age = sorted(self._entries.items(), key=lambda item: item[1].used)
        excess = len(by_age) - keep if keep is not None else 0
        for user, entry in by_age:
            closed = entry.conn.nc.is_closed
            idle = entry.inflight == 0 and (now - entry.used >= idle_s or excess > 0)
            if closed or idle:
                excess -= 1
                self._entries.pop(user, None)
                if not closed:
                    await self._close_conn(entry.conn)

    async def _close_conn(self, conn: Connection) -> None:
        """Close ``conn`` to the end even when the caller is cancelled (the reaper, when the
        gateway stops): :meth:`close` waits for it rather than leaving a socket open."""
        task = asyncio.create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        await asyncio.shield(task)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        entries, self._entries = self._entries, {}
        await asyncio.gather(*(e.conn.close() for e in entries.values()), *self._closing)
