"""The tracking service: workspaces, experiments, runs."""

from __future__ import annotations

from cairn.services.tracking._projection import TrackingProjection
from cairn.services.tracking._service import TrackingService
from cairn.settings import Settings

__all__ = ["TrackingProjection", "TrackingService", "main"]


async def main(settings: Settings) -> None:
    """Run the tracking service alone until SIGTERM/SIGINT."""
    import asyncio

    from cairn.service import install_stop_signals, run_services

    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_services(settings, [TrackingService], stop=stop)
