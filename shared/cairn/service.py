"""The one shape every service process has.

``run_services(settings, factories)`` connects, provisions the streams, follows the workspace
members (the gate every responder of the process asks about a person's request,
:mod:`cairn.members`), builds each service, runs them in one ``asyncio.TaskGroup`` until the
stop event is set, lets each finish its in-flight work, then drains the connection. ``serve``
does that until SIGTERM/SIGINT, and ``service_main(factory)`` is the ``main(settings)`` of
every service package: ``cairn serve <name>`` runs one service this way; ``cairn up`` runs all
of them in one process.

Each service is part of the process's readiness (:data:`cairn.telemetry.readiness`): expected
when built, ready once started (and its projections caught up: they check themselves), not
ready from the moment the stop is asked. ``serve(..., ops=OpsAddress(host, port))`` also serves
``/metrics``, ``/healthz`` and ``/readyz`` on that address for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from cairn.bus import (
    AggregateCache,
    Connection,
    EventStore,
    connect,
    provision,
    wait_for_streams,
)
from cairn.errors import Unauthenticated
from cairn.log import get_logger
from cairn.members import Membership
from cairn.projection import AsOfReadModels, Projection, ProjectionRunner, Tables
from cairn.proto.commands import QueryResult
from cairn.rpc import Request, Responder, answer_pings, install_gate, slot_lent
from cairn.settings import Settings
from cairn.telemetry import ops_server, readiness

__all__ = [
    "OpsAddress",
    "ProjectedService",
    "Service",
    "ServiceFactory",
    "install_stop_signals",
    "reconcile_every",
    "run_services",
    "serve",
    "service_main",
]

log = get_logger("cairn.service")


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Subscribe and catch up enough to answer; return when ready to serve."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish in-flight work and return."""


ServiceFactory = Callable[[Connection, Settings], Service]


class OpsAddress(NamedTuple):
    """Where a service process serves its ops routes (no authentication: keep it on loopback
    or behind the network boundary)."""

    host: str = "127.0.0.1"
    port: int = 0


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_services(
    settings: Settings,
    factories: list[ServiceFactory],
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    provision_streams: bool = True,
) -> None:
    """``provision_streams=False`` for processes that connect as clients (agents): they use
    the streams but may not create them (they wait until a service has: an agent may start
    first), serve no person's requests and follow no members. Provisioning that JetStream
    does not answer in time (a loaded cluster) is tried again until it is, or until
    ``stop``."""
    stop = stop or asyncio.Event()
    conn = await connect(settings, name="cairn-services", wait=True, stop=stop)
    members: Membership | None = None
    services: list[Service] = []
    try:
        if not conn.own_jetstream:
            raise Unauthenticated(
                f"{settings.nats_user or 'this user'} is a person (no JetStream of its own):"
                " services and agents connect as the stack's own users — cairn-service for"
                " `cairn serve` (`--creds FILE`, or the home's credentials.json), cairn-agent"
                " for `cairn agent` (CAIRN_NATS_USER and CAIRN_NATS_PASSWORD)"
            )
        if not provision_streams:
            if not await wait_for_streams(conn, stop=stop):
                return  # stopped before the streams were there: nothing was started
        else:
            await provision(conn, stop=stop)
            members = Membership(conn)
            await members.start()
            install_gate(conn, members)
        services = [factory(conn, settings) for factory in factories]
        for service in services:
            readiness.expect(service.name, service)
        for service in services:
            await service.start()
        async with asyncio.TaskGroup() as tg:
            for service in services:
                tg.create_task(service.run(stop), name=service.name)
                tg.create_task(answer_pings(conn, service.name, stop))
            tg.create_task(_not_ready_on(stop, services))
            log.info("services_started", services=[s.name for s in services])
            for service in services:
                readiness.mark_ready(service.name, service)
            if ready is not None:
                ready.set()
    finally:
        log.info("services_stopping")
        for service in services:
            readiness.withdraw(service.name, service)
        if members is not None:
            await members.stop()
        await conn.close()


async def _not_ready_on(stop: asyncio.Event, services: list[Service]) -> None:
    """From the moment the stop is asked the process is no longer ready: a load balancer stops
    sending while in-flight work finishes."""
    await stop.wait()
    for service in services:
        readiness.mark_not_ready(service.name, service)


async def serve(
    settings: Settings,
    *factories: ServiceFactory,
    provision_streams: bool = True,
    ops: OpsAddress | None = None,
) -> None:
    """Run ``factories``' services in this process until SIGTERM/SIGINT; with ``ops`` (a
    port other than 0), serve the ops routes there meanwhile (bound first: a port in use
    fails before anything connects)."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        if ops is not None and ops.port:
            await stack.enter_async_context(ops_server(ops.host, ops.port))
        await run_services(
            settings, list(factories), stop=stop, provision_streams=provision_streams
        )


def service_main(
    factory: ServiceFactory,
) -> Callable[..., Coroutine[Any, Any, None]]:
    """The ``main(settings, ops=None)`` of a service package: run that one service alone."""

    async def main(settings: Settings, ops: OpsAddress | None = None) -> None:
        await serve(settings, factory, ops=ops)

    main.__doc__ = f"Run {getattr(factory, 'name', factory)} alone until SIGTERM/SIGINT."
    return main


async def reconcile_every(
    stop: asyncio.Event,
    tick_s: float,
    reconcile: Callable[[], Awaitable[None]],
    event: str,
    *,
    wake: asyncio.Event | None = None,
) -> None:
    """A process manager's loop: ``reconcile`` now and every ``tick_s`` until ``stop``. A
    failed pass is logged (as ``event``) and the next one tries again: the decisions it takes
    have ids derived from their facts, so a pass repeated is a pass taken once. ``wake``, set
    by whatever saw a fact the loop acts on (a read model applying it), starts the next pass
    at once; set during a pass, it starts another one after it. The timer stays the fallback
    for what no fact announces."""
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        try:
            await reconcile()
        except Exception as exc:  # the bus may be away; the next pass tries again
            log.warning(event, error=repr(exc))
        await _first_of(stop, wake, tick_s)


async def _first_of(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, for at most ``timeout`` seconds."""
    if wake is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout)
        return
    if stop.is_set() or wake.is_set():
        return
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class ProjectedService:
    """The shape of a service that answers from a read model: responders (commands, queries)
    plus one projection following its stream, an event store and an aggregate cache.
    Subclasses set ``name`` and fill ``responders`` in their ``__init__``."""

    name = "service"

    def __init__(self, conn: Connection, settings: Settings, projection: Projection[Any]) -> None:
        self.conn = conn
        self.store = EventStore(conn)
        self.cache = AggregateCache.shared(self.store)
        settings.state_path.mkdir(parents=True, exist_ok=True)
        self.projection = ProjectionRunner(
            conn, settings.state_path / f"{projection.name}.sqlite", projection
        )
        self.responders: list[Responder] = []
        #: read models of one entity as of a moment, from the log (``read_as_of``)
        self.as_of = AsOfReadModels(
            EventStore(conn, stream=projection.source.stream), type(projection)
        )
        self._stop_projection = asyncio.Event()
        self._projection_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._projection_task = asyncio.create_task(self.projection.run(self._stop_projection))
        await asyncio.sleep(0)  # the task's first step: its readiness check is in before ours
        for responder in self.responders:
            await responder.start()

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        for responder in self.responders:
            await responder.stop()
        self._stop_projection.set()
        if self._projection_task is not None:
            await self._projection_task
        self.projection.close()
        self.as_of.close()

    async def read_as_of(
        self,
        subject: str,
        fn: Callable[[Any, Tables], Any],
        *,
        up_to_seq: int | None,
        up_to_time: datetime | None,
    ) -> QueryResult | None:
        """Answer ``fn`` from a read model of ``subject``'s messages up to ``up_to_seq`` and
        stored at or before ``up_to_time`` (the same tables and queries as the live one, built
        from the log); ``None`` when the subject had no message then."""
        then = await self.read_then(subject, fn, up_to_seq=up_to_seq, up_to_time=up_to_time)
        return then if then.seq else None

    async def read_then(
        self,
        subject: str,
        fn: Callable[[Any, Tables], Any],
        *,
        up_to_seq: int | None,
        up_to_time: datetime | None,
    ) -> QueryResult:
        """As ``read_as_of``, for a listing: ``subject`` may be a filter with wildcards (every
        aggregate it matches: a workspace's models, its runs and experiments); when nothing
        matched then, ``fn`` answers from an empty read model, with ``seq`` 0."""
        db, t, seq = await self.as_of.build(subject, up_to_seq=up_to_seq, up_to_time=up_to_time)
        return QueryResult(seq=seq, data=fn(db, t))

    async def read_at(
        self, req: Request, fn: Callable[[Any, Tables], Any], subject: str
    ) -> QueryResult:
        """``fn`` on the live read model (``read``) or, for an ``AsOfQuery`` that names a
        moment, on a read model of ``subject``'s messages up to then (``read_then``)."""
        q = req.body
        if q.as_of_seq is None and q.as_of_time is None:
            return await self.read(req, fn)
        return await self.read_then(subject, fn, up_to_seq=q.as_of_seq, up_to_time=q.as_of_time)

    async def read(self, req: Request, fn: Callable[[Any, Tables], Any]) -> QueryResult:
        """Answer a query from the read model once it has applied the query's ``min_seq``."""
        q = req.body
        if self.projection.last_seq < q.min_seq:  # a wait: its slot serves others meanwhile
            async with slot_lent():
                await self.projection.wait_for(q.min_seq, timeout=min(max(q.wait_s, 0.0), 30.0))
        data, seq = self.projection.read(fn)
        return QueryResult(seq=seq, data=data)
