"""The registry service: versioned models (environments, datastores, datasets and compute
targets follow)."""

from __future__ import annotations

import asyncio

from cairn.services.registry._projection import RegistryProjection
from cairn.services.registry._service import RegistryService
from cairn.settings import Settings

__all__ = ["RegistryProjection", "RegistryService", "main"]


async def main(settings: Settings) -> None:
    """Run the registry alone until SIGTERM/SIGINT."""
    from cairn.service import install_stop_signals, run_services

    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_services(settings, [RegistryService], stop=stop)
