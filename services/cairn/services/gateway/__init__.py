"""The gateway: every HTTP surface of Cairn (the studio, the JSON API, ``/metrics``), an
adapter that acts as the signed-in user through the same commands and queries as the SDK."""

from __future__ import annotations

import asyncio

from cairn.service import install_stop_signals
from cairn.services.gateway._app import Gateway, create_app, running
from cairn.settings import Settings

__all__ = ["Gateway", "create_app", "main", "running"]


async def main(settings: Settings) -> None:
    """Serve the gateway at ``gateway_host:gateway_port`` until SIGTERM/SIGINT. It holds no
    NATS credentials: each user's requests go over a connection made with their own."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    gateway = Gateway(settings)
    print(f"gateway at {gateway.url}", flush=True)
    await gateway.run(stop)
