"""Commands and queries over NATS request/reply.

Server side, a :class:`Responder` serves one subject filter (``cairn.cmd.*.run.>``) in a queue
group, so any number of replicas share the load. Every request gets exactly one reply: the
handler's result, or ``ErrorReply(code, message)`` for bad input (malformed JSON, unknown type,
missing field, oversized payload, bad subject token) and for domain errors. A failing request
never stops the responder. Requests run as tasks (bounded); ``stop`` unsubscribes, then waits
for those in flight. Each request is counted by outcome and timed (:mod:`cairn.telemetry`).

Client side, :class:`Client` checks the size before sending, retries timeouts with the same
bytes (commands are idempotent by ``command_id``) and raises the ``CairnError`` of a reply's code.

Who sent a request is what the server attests, never what the client says: people connect to
the ``USERS`` account, which imports the services' subjects with ``share: true``, so each of
their requests carries a ``Nats-Request-Info`` header (account, user) that the server writes
over any the client set. A request without it comes from inside the services' account
``CAIRN`` (services, agents), trusted by membership and recorded as ``SERVICE_ACTOR``
(no import crossed, so the server vouches for no header there: a member of ``CAIRN`` could
write one itself, which is why only services and agents are members). A ``Cairn-Actor``
header means nothing.

A person's request passes a second gate before its handler: the process's :class:`Gate`
(:class:`cairn.members.Membership`, installed per connection by
:func:`cairn.service.run_services`), which refuses a person who is not a member of the
request's workspace, or whose roles there do not allow it. A responder on a connection without
a gate refuses people (``Unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, Union

import msgspec
import structlog
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cairn.bus import SCORER_USER, CommandContext, Connection
from cairn.errors import (
    CairnError,
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    UnknownMessageType,
    error_for_code,
)
from cairn.log import get_logger
from cairn.proto.commands import (
    Accepted,
    Command,
    ErrorReply,
    Opened,
    Query,
    QueryResult,
    Reply,
)
from cairn.proto.subjects import command, query, validate_token
from cairn.telemetry import RequestMetrics
from cairn.tokens import person_of

__all__ = [
    "ADMIN_ACTOR",
    "MAX_REQUEST_BYTES",
    "PEOPLE_ACCOUNT",
    "PING_SUBJECT",
    "SCORER_USER",
    "SERVICE_ACCOUNT",
    "SERVICE_ACTOR",
    "Client",
    "Gate",
    "RawReply",
    "Request",
    "Responder",
    "actor_of",
    "answer_pings",
    "gate_of",
    "install_gate",
    "is_reply_subject",
    "ping_all",
    "slot_lent",
]

log = get_logger("cairn.rpc")
MAX_REQUEST_BYTES = 256 * 1024
PING_SUBJECT = "cairn.svc.ping"
#: the NATS accounts of the services (and agents) and of people
SERVICE_ACCOUNT = "CAIRN"
PEOPLE_ACCOUNT = "USERS"
#: the actor of a request from inside the services' account
SERVICE_ACTOR = "cairn"
#: the admin user (``admin.json``), the actor of the commands only it may send (``member.*``)
ADMIN_ACTOR = "cairn-admin"
_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(Reply)


@dataclass(frozen=True)
class Request:
    workspace: str
    verb: str
    body: Any
    actor: str
    #: a query (``cairn.q.``), not a command
    query: bool = False

    def context(self) -> CommandContext:
        """Who sent this command and why, for the events it causes."""
        return CommandContext(
            workspace=self.workspace,
            command_id=self.body.command_id,
            actor=self.actor,
            correlation_id=self.body.correlation_id,
        )


@dataclass(frozen=True)
class RawReply:
    """Bytes answered as they are (blob reads), marked with the ``Cairn-Reply: raw`` header."""

    data: bytes


Handler = Callable[[Request], Awaitable[Accepted | QueryResult | Opened | RawReply]]


def actor_of(headers: dict[str, str] | None) -> str:
    """Who sent a request: the person of the user the server attests for a request from the
    people's account (it overwrites any such header a person sets; an API token's user
    ``<person>~<id>`` acts as its person: :func:`cairn.tokens.person_of`), else
    ``SERVICE_ACTOR`` (a request from inside the services' account, which no import
    crossed)."""
    info = (headers or {}).get("Nats-Request-Info")
    if info:
        try:
            attested = json.loads(info)
        except ValueError:
            attested = None
        if isinstance(attested, dict) and attested.get("acc") == PEOPLE_ACCOUNT:
            user = attested.get("user")
            if isinstance(user, str) and person_of(user):
                return person_of(user)
    return SERVICE_ACTOR


class Gate(Protocol):
    """The second gate of a person's request (the first is the server's permissions)."""

    async def admit(self, request: Request) -> None:
        """Return to let ``request`` through; raise a ``CairnError`` to refuse it."""


#: each NATS client's gate (the services of one process share their connection and its gate)
_GATES: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()


def gate_of(conn: Connection) -> Gate | None:
    """The gate installed on ``conn`` (None: services alone on it, as in some tests)."""
    return _GATES.get(conn.nc)


def install_gate(conn: Connection, gate: Gate) -> None:
    """``gate`` checks every person's request that a responder on ``conn`` serves (from the
    responder's ``start`` on)."""
    _GATES[conn.nc] = gate


class _TagOnly(msgspec.Struct):
    """A request's tag alone (``type``, msgspec's tag field), read only when it did not
    decode."""

    type: Any = None


_tag_decoder = msgspec.json.Decoder(_TagOnly)


class _Slot:
    """One request's place under its responder's in-flight bound."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self.slots = slots
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()

    async def take(self) -> None:
        await self.slots.acquire()
        self.held = True


#: the slot of the request being served (see ``slot_lent``)
_SLOT: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("cairn_rpc_slot", default=None)
#: requests of one process that may wait at once without holding a slot
_MAX_WAITING = 4096
_waiting = 0


@contextlib.asynccontextmanager
async def slot_lent() -> AsyncIterator[None]:
    """While the block waits (a query for a sequence its read model has not applied yet), its
    responder slot serves other requests: a page's long-poll must not hold a slot for its whole
    wait, or 64 open pages would stall every other query of the service. The slot is taken
    back before the caller goes on. Beyond ``_MAX_WAITING`` waiters, a request keeps its slot
    while it waits."""
    global _waiting
    slot = _SLOT.get()
    if slot is None or not slot.held or _waiting >= _MAX_WAITING:
        yield
        return
    _waiting += 1
    slot.release()
    try:
        yield
    finally:
        _waiting -= 1
        await slot.take()  # cancelled here: not held, and not released again when done


def is_reply_subject(subject: str) -> bool:
    """Whether ``subject`` is one a request may ask its answer on: an inbox (``_INBOX_<user>.``
    of the stack's users, nats-py's default ``_INBOX.``) or a person's, rewritten by the
    server's import (``_R_.``). Never a ``cairn.`` subject: NATS checks what a sender
    publishes to, not the reply subject it names, so an answer sent anywhere else would carry
    the answerer's authority."""
    return subject.startswith(("_INBOX_", "_INBOX.", "_R_."))


class Responder:
    """Serves ``routes`` (verb -> handler) for messages of ``types`` on ``subjects`` (filters
    such as ``cairn.cmd.*.run.>``; each service subscribes to its own areas only)."""

    def __init__(
        self,
        conn: Connection,
        *,
        subjects: Iterable[str],
        queue: str,
        types: Iterable[type[Command] | type[Query]],
        routes: dict[str, Handler],
        max_in_flight: int = 64,
        max_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.conn = conn
        self.subjects = tuple(subjects)
        self.queue = queue
        served = tuple(types)
        union: Any = served[0] if len(served) == 1 else Union[served]  # noqa: UP007
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)
        self._verb_of = {t: getattr(t, "VERB", "") or getattr(t, "NAME", "") for t in served}
        self._tags = {t.__struct_config__.tag for t in served}
        self.routes = routes
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._gate: Gate | None = None
        self._metrics = RequestMetrics(queue, set(routes))

    async def start(self) -> None:
        self._gate = _GATES.get(self.conn.nc)
        for subject in self.subjects:
            self._subs.append(
                await self.conn.nc.subscribe(subject, queue=self.queue, cb=self._on_msg)
            )

    async def stop(self, grace_s: float = 10.0) -> None:
        while self._subs:
            await self._subs.pop().unsubscribe()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)

    async def _on_msg(self, msg: Any) -> None:
        if msg.reply and not is_reply_subject(msg.reply):
            # the server checks what a sender publishes to, never the reply subject it names;
            # an answer sent there would be published with the services' authority (into
            # EVENTS, say): such a request is dropped unanswered
            log.warning("request_dropped", subject=msg.subject, reply=msg.reply[:200])
            return
        await self._slots.acquire()
        slot = _Slot(self._slots)
        token = _SLOT.set(slot)  # the task copies this context: its handler may lend the slot
        try:
            task = asyncio.create_task(self._serve(msg))
        finally:
            _SLOT.reset(token)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, slot))

    def _done(self, task: asyncio.Task[None], slot: _Slot) -> None:
        self._tasks.discard(task)
        slot.release()

    def _parse(self, msg: Any) -> Request:
        tokens = msg.subject.split(".")
        workspace = validate_token(tokens[2] if len(tokens) > 3 else "", "workspace")
        verb = ".".join(tokens[3:])
        if verb not in self.routes:
            raise UnknownMessageType(f"no such operation {verb!r}")
        if len(msg.data) > self.max_bytes:
            raise PayloadTooLarge(f"request of {len(msg.data)} bytes exceeds {self.max_bytes}")
        try:
            body = self._decoder.decode(msg.data)
        except msgspec.ValidationError as exc:
            if self._unknown_tag(msg.data):
                raise UnknownMessageType(f"unknown message type: {exc}") from exc
            raise InvalidInput(f"invalid {verb} request: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"malformed JSON: {exc}") from exc
        if self._verb_of[type(body)] != verb:
            raise InvalidInput(f"{type(body).__name__} cannot be sent to {verb!r}")
        return Request(
            workspace=workspace,
            verb=verb,
            body=body,
            actor=actor_of(msg.headers),
            query=tokens[1] == "q",
        )

    def _unknown_tag(self, data: bytes) -> bool:
        """Whether a request that did not decode names a type this responder does not serve
        (rather than a known type with a bad field)."""
        try:
            tag = _tag_decoder.decode(data).type
        except msgspec.ValidationError:  # not even an object
            return False
        return tag is not None and (not isinstance(tag, str) or tag not in self._tags)

    async def _serve(self, msg: Any) -> None:
        started = time.perf_counter()
        reply: Reply | RawReply
        correlation = None
        outcome = "ok"
        try:
            request = self._parse(msg)
            if request.actor != SERVICE_ACTOR:
                if self._gate is None:
                    raise Unavailable("this service cannot check workspace membership")
                await self._gate.admit(request)
            correlation = getattr(request.body, "correlation_id", None) or getattr(
                request.body, "command_id", None
            )
            with structlog.contextvars.bound_contextvars(
                correlation_id=correlation,
                run_id=getattr(request.body, "run_id", None),
                workspace=request.workspace,
                verb=request.verb,
                actor=request.actor,
            ):
                reply = await self.routes[request.verb](request)
        except CairnError as exc:
            reply = ErrorReply(code=exc.code, message=exc.message)
            outcome = exc.code
            # an answer the caller expects (not found, exists, bad input) is routine; a
            # refused identity is worth seeing
            level = log.info if isinstance(exc, PermissionDenied) else log.debug
            level("request_refused", subject=msg.subject, code=exc.code, error=exc.message)
        except Exception:
            log.exception("request_failed", subject=msg.subject, correlation_id=correlation)
            reply = ErrorReply(code="internal", message="internal error; see the service log")
            outcome = "internal"
        tokens = msg.subject.split(".", 3)  # cairn.cmd|q.<ws>.<verb>
        self._metrics.observe(tokens[-1], tokens[1:2] == ["q"], outcome, started)
        if msg.reply:
            try:
                await self._respond(msg, reply)
            except Exception as exc:  # the caller may have gone away; nothing else to do
                log.warning("reply_failed", subject=msg.subject, error=str(exc))

    async def _respond(self, msg: Any, reply: Reply | RawReply) -> None:
        if isinstance(reply, RawReply):
            await self.conn.nc.publish(msg.reply, reply.data, headers={"Cairn-Reply": "raw"})
            return
        payload = _encoder.encode(reply)
        if len(payload) > self.conn.max_payload - 1024:
            payload = _encoder.encode(
                ErrorReply(
                    code=PayloadTooLarge.code,
                    message=f"the reply ({len(payload)} bytes) exceeds the server's message size;"
                    " ask for less (a page, a filter)",
                )
            )
        await msg.respond(payload)


class Client:
    """Sends commands and queries for one workspace."""

    def __init__(
        self, conn: Connection, workspace: str, *, attempts: int = 3, timeout: float | None = None
    ) -> None:
        self.conn = conn
        self.workspace = validate_token(workspace, "workspace")
        self.attempts = attempts
        self.timeout = timeout or conn.settings.request_timeout
        self.headers: dict[str, str] = {}

    async def send(self, cmd: Command) -> Accepted:
        reply = await self._request(command(self.workspace, cmd.VERB), _encoder.encode(cmd))
        if not isinstance(reply, Accepted):
            raise CairnError(f"unexpected reply {type(reply).__name__} to {cmd.VERB}")
        return reply

    async def send_any(self, cmd: Command) -> Reply:
        """A command whose reply is not ``Accepted`` (an upload opens a session)."""
        return await self._request(command(self.workspace, cmd.VERB), _encoder.encode(cmd))

    async def ask(self, q: Query) -> QueryResult:
        timeout = max(self.timeout, q.wait_s + 2)
        reply = await self._request(query(self.workspace, q.NAME), _encoder.encode(q), timeout)
        if not isinstance(reply, QueryResult):
            raise CairnError(f"unexpected reply {type(reply).__name__} to {q.NAME}")
        return reply

    async def _request(self, subject: str, payload: bytes, timeout: float | None = None) -> Reply:
        if len(payload) > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(f"request of {len(payload)} bytes exceeds {MAX_REQUEST_BYTES}")
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(0.2 * attempt)
            try:
                msg = await self.conn.request(
                    subject, payload, timeout=timeout or self.timeout, headers=self.headers
                )
            except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
                if self.conn.denied(subject):
                    raise PermissionDenied(f"not allowed to send to {subject}") from exc
                last = exc
                continue
            reply: Reply = _reply_decoder.decode(msg.data)
            if isinstance(reply, ErrorReply):
                error = error_for_code(reply.code, reply.message)
                if isinstance(error, Unavailable) and attempt + 1 < self.attempts:
                    # the service could not reach its stream (no leader past its own retries):
                    # the same command again (its id makes it at most once)
                    last = error
                    continue
                raise error
            return reply
        raise Unavailable(f"no service answered {subject}: {last!r}")


async def answer_pings(conn: Connection, name: str, stop: asyncio.Event) -> None:
    """Answer ``cairn.svc.ping`` with who this service instance is, until ``stop``."""
    started = time.time()
    identity = {"service": name, "instance": f"{socket.gethostname()}:{os.getpid()}"}

    async def on_ping(msg: Any) -> None:
        body = {**identity, "uptime_s": round(time.time() - started, 1)}
        await msg.respond(json.dumps(body).encode())

    sub = await conn.nc.subscribe(PING_SUBJECT, cb=on_ping)
    try:
        await stop.wait()
    finally:
        await sub.unsubscribe()


async def ping_all(conn: Connection, wait_s: float = 0.5) -> list[dict[str, Any]]:
    """Every service instance that answers a ping within ``wait_s``."""
    inbox = conn.nc.new_inbox()
    sub = await conn.nc.subscribe(inbox)
    found: list[dict[str, Any]] = []
    try:
        await conn.nc.publish(PING_SUBJECT, b"", reply=inbox)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except NatsTimeout:
                break
            if not msg.data:  # a status (no responders: nothing serves pings), not an answer
                continue
            try:
                found.append(json.loads(msg.data))
            except ValueError:
                log.warning("ping_answer_unreadable", data=msg.data[:200])
    finally:
        await sub.unsubscribe()
    return sorted(found, key=lambda s: (s["service"], s["instance"]))
