"""The membership view: who is a member of which workspace, with which roles there, folded
from the log; the second gate of every person's request (docs/security.md).

Each service process follows the workspace events (``cairn.ev.*.workspace.*``) with one
ordered consumer on its connection and folds the members in memory; :mod:`cairn.rpc`'s
responders ask :meth:`Membership.admit` before a person's request reaches its handler. A
member's request costs two dictionary lookups (their roles in the workspace, then whether
those roles allow the verb, cached per roles and verb). Only a refusal costs more: before
refusing, the view catches up with the log as the stream leader has it now (whether a
workspace event follows the last one folded: one request the leader answers; the consumer's
own count may come from a follower that is behind), so a member added a moment ago is not
refused by a view that has not folded it yet.

Until the view has caught up with the log it refuses people with ``Unavailable``; requests
from inside the services' account (services, agents, the admin) are not member-checked.

A watchdog asks the consumer's position every ``stall_s``: when the consumer has events the
view has not received and none arrived since the last look, or the consumer is gone, it
follows the log again from the last event folded (client subscriptions can silently stop after
a server restart, nats.py#504; a removal must not wait for the next restart of the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from cairn.bus import Connection, EventStore
from cairn.embedded._auth import ROLE_COMMANDS
from cairn.errors import PermissionDenied, Unavailable
from cairn.log import get_logger
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import (
    MemberAdded,
    MemberRemoved,
    MemberRolesChanged,
    WorkspaceCreated,
    decode_envelope,
)
from cairn.proto.streams import EVENTS
from cairn.rpc import SERVICE_ACTOR, Request

__all__ = ["WORKSPACE_EVENTS", "Membership", "roles_allow"]

log = get_logger("cairn.members")
#: the events the view folds: every workspace aggregate's
WORKSPACE_EVENTS = "cairn.ev.*.workspace.*"
_CREATE = CreateWorkspace.VERB
#: the query of one's own workspaces (the tracking service answers it with those alone)
_LIST = "workspace.list"
_NOBODY: dict[str, frozenset[str]] = {}


def _matches(pattern: str, verb: str) -> bool:
    """A ``ROLE_COMMANDS`` entry (``run.>``, ``job.submit``) against a verb, as the server
    matches the same entry against the subject."""
    if pattern.endswith(".>"):
        return verb.startswith(pattern[:-1]) and len(verb) > len(pattern) - 1
    return verb == pattern


def roles_allow(roles: frozenset[str], verb: str, *, query: bool) -> bool:
    """Whether a member with ``roles`` in a workspace may send ``verb`` there: any role asks
    queries; a command needs a role whose families include it (``ROLE_COMMANDS``)."""
    if query:
        return bool(roles)
    return any(_matches(p, verb) for role in roles for p in ROLE_COMMANDS.get(role, ()))


class Membership:
    """The members of every workspace, as the log says; one per service connection."""

    def __init__(self, conn: Connection, *, heartbeat_s: float = 5.0, stall_s: float = 5.0) -> None:
        self.conn = conn
        self._store = EventStore(conn)
        self.heartbeat_s = heartbeat_s
        self.stall_s = stall_s
        #: workspace -> user -> roles there
        self.members: dict[str, dict[str, frozenset[str]]] = {}
        self.workspaces: set[str] = set()
        self.caught_up = False
        self._applied = 0  # the stream sequence of the last event folded
        self._received = 0  # the consumer sequence of the last message handled
        self._sub: Any = None
        self._ready = asyncio.Event()
        self._allowed: dict[tuple[frozenset[str], str, bool], bool] = {}
        self._sync_lock = asyncio.Lock()
        self._subscribe_lock = asyncio.Lock()
        self._synced_from = -1.0  # when the last completed catch-up started (monotonic)
        self._progress_at = time.monotonic()  # when a message last arrived
        self._watchdog: asyncio.Task[None] | None = None

    # -- following the log ----------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Follow the workspace events; return once the view has caught up with the log
        (``Unavailable`` if that takes longer than ``timeout``)."""
        await self._subscribe()
        self._watchdog = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"the workspace members were not read from the log within {timeout}s"
            ) from None

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _subscribe(self) -> None:
        async with self._subscribe_lock:  # the watchdog and a catch-up may both ask
            await self._subscribe_now()

    async def _subscribe_now(self) -> None:
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()
        self._received = 0
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._applied + 1
        )
        self._sub = await self.conn.js.subscribe(
            WORKSPACE_EVENTS,
            stream=EVENTS.name,
            cb=self._on_msg,
            ordered_consumer=True,
            idle_heartbeat=self.heartbeat_s,
            config=config,
        )
        if self._has_all(await self._sub.consumer_info()):
            self._caught_up()

    def _has_all(self, info: Any) -> bool:
        """Whether the consumer has nothing left to deliver and this view has handled all it
        delivered (consumer sequences: the stream's are not contiguous under a filter)."""
        return bool(info.num_pending == 0 and self._received >= info.delivered.consumer_seq)

    def _caught_up(self) -> None:
        if not self.caught_up:
            log.info("members_caught_up", seq=self._applied, workspaces=len(self.workspaces))
        self.caught_up = True
        self._ready.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.stall_s)
            looked_at = time.monotonic()
            # a consumer lost with a restarted server is expected (the view subscribes again);
            # one that is alive but delivers nothing is not
            lost = False
            sub = self._sub
            if sub is None:  # the last attempt to follow again failed: the server was away
                behind = lost = True
            else:
                try:
                    behind = not self._has_all(await sub.consumer_info())
                except Exception as exc:
                    log.info("members_consumer_lost", error=str(exc))
                    behind = lost = True
            if behind and looked_at - self._progress_at >= self.stall_s:
                if sub is not None:  # else: said when the last attempt failed
                    if lost or not self.conn.nc.is_connected:
                        log.info("members_resubscribing", seq=self._applied)
                    else:
                        log.warning("members_stalled", seq=self._applied)
                await self._resubscribe(quiet=sub is None)

    async def _resubscribe(self, *, quiet: bool = False) -> bool:
        """Follow the log again from the last event folded; False (said once, not on the
        attempts that follow: ``quiet``) when that fails, the server being away: the
        subscription is then None until the next attempt succeeds."""
        try:
            await self._subscribe()
        except Exception as exc:
            if not quiet:
                log.info("members_resubscribe_failed", seq=self._applied, error=str(exc))
            return False
        log.info("members_resubscribed", seq=self._applied)  # after a notice or a failure
        return True

    async def _on_msg(self, msg: Any) -> None:
        self._progress_at = time.monotonic()
        meta = msg.metadata
        seq = meta.sequence.stream
        self._received = meta.sequence.consumer
        if seq > self._applied:
            try:
                self.apply(decode_envelope(msg.data).data, msg.subject.split(".")[2])
            except Exception as exc:  # one unreadable event must not stop the view
                log.error("member_event_unreadable", seq=seq, error=str(exc))
            self._applied = seq
        if meta.num_pending == 0:
            self._caught_up()

    def apply(self, event: Any, workspace: str) -> None:
        """Fold one workspace event of ``workspace``."""
        match event:
            case WorkspaceCreated():
                self.workspaces.add(workspace)
            case MemberAdded(user=user, roles=roles) | MemberRolesChanged(user=user, roles=roles):
                self.members.setdefault(workspace, {})[user] = frozenset(roles)
            case MemberRemoved(user=user):
                self.members.get(workspace, {}).pop(user, None)

    async def sync(self, since: float, timeout: float = 2.0) -> None:
        """Fold what the log holds now (as of a moment after ``since``): the consumer's
        position is asked and the view waits until it has folded that far. Concurrent callers
        share a catch-up that started after their own ``since``."""
        async with self._sync_lock:
            if self._synced_from >= since:
                return
            started = time.monotonic()
            deadline = started + timeout
            if self._sub is None:  # not following (the server was away): try now
                if not await self._resubscribe(quiet=True):
                    return
            try:
                while time.monotonic() < deadline:
                    # the stream leader's word, not the consumer's: on an R3 stream the
                    # consumer may sit on a follower that has not applied the latest member
                    # yet, and would report nothing pending
                    following = await self._store.leader_next(WORKSPACE_EVENTS, self._applied + 1)
                    if following is None:
                        self._synced_from = started
                        return
                    await self._sub.consumer_info()  # raises when the consumer is gone
                    await asyncio.sleep(0.005)
            except Exception as exc:  # the consumer is gone (a server restart): follow anew
                log.warning("members_resubscribe", error=str(exc))
                await self._resubscribe()

    # -- the gate -------------------------------------------------------------------------

    def _allows(self, roles: frozenset[str], req: Request) -> bool:
        key = (roles, req.verb, req.query)
        found = self._allowed.get(key)
        if found is None:
            found = self._allowed[key] = roles_allow(roles, req.verb, query=req.query)
        return found

    async def admit(self, req: Request) -> None:
        """Let ``req`` through, or raise ``PermissionDenied`` (not a member of the workspace;
        a role there that does not allow the verb) or ``Unavailable`` (the view has not caught
        up with the log yet). Creating a workspace that does not exist needs no membership:
        its creator becomes its first member."""
        if req.actor == SERVICE_ACTOR:
            return
        if req.query and req.verb == _LIST and self.caught_up:
            return  # answered with the asker's own memberships only, from any workspace
        roles = self.members.get(req.workspace, _NOBODY).get(req.actor)
        if roles is not None and self.caught_up and self._allows(roles, req):
            return
        if not self.caught_up:
            raise Unavailable("this service is still reading the workspace members; try again")
        await self.sync(time.monotonic())
        ws = req.workspace
        roles = self.members.get(ws, _NOBODY).get(req.actor)
        if roles is None:
            if req.verb == _CREATE and not req.query and ws not in self.workspaces:
                return
            raise PermissionDenied(f"{req.actor} is not a member of workspace {ws}")
        if not self._allows(roles, req):
            held = ", ".join(sorted(roles))
            raise PermissionDenied(
                f"{req.actor}'s roles in workspace {ws} ({held}) do not allow {req.verb}"
            )
