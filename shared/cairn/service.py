"""The one shape every service process has.

``run_services(settings, factories)`` connects, provisions the streams, builds each service,
runs them in one ``asyncio.TaskGroup`` until SIGTERM/SIGINT sets the stop event, lets each finish
its in-flight work, then drains the connection. ``cairn serve <name>`` runs one service this
way; ``cairn up`` runs all of them in one process.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol

from cairn.bus import Connection, connect, provision
from cairn.log import get_logger
from cairn.rpc import answer_pings
from cairn.settings import Settings

__all__ = ["Service", "ServiceFactory", "install_stop_signals", "run_services"]

log = get_logger("cairn.service")


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Subscribe and catch up enough to answer; return when ready to serve."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish in-flight work and return."""


ServiceFactory = Callable[[Connection, Settings], Service]


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
) -> None:
    stop = stop or asyncio.Event()
    conn = await connect(settings, name="cairn-services")
    try:
        await provision(conn)
        services = [factory(conn, settings) for factory in factories]
        for service in services:
            await service.start()
        async with asyncio.TaskGroup() as tg:
            for service in services:
                tg.create_task(service.run(stop), name=service.name)
                tg.create_task(answer_pings(conn, service.name, stop))
            log.info("services_started", services=[s.name for s in services])
            if ready is not None:
                ready.set()
    finally:
        log.info("services_stopping")
        await conn.close()
