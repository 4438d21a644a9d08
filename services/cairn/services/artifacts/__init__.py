"""The artifact service: chunked uploads of run files into a content-addressed blob store."""

from __future__ import annotations

import asyncio

from cairn.services.artifacts._service import ArtifactsService
from cairn.settings import Settings

__all__ = ["ArtifactsService", "main"]


async def main(settings: Settings) -> None:
    """Run the artifact service alone until SIGTERM/SIGINT."""
    from cairn.service import install_stop_signals, run_services

    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_services(settings, [ArtifactsService], stop=stop)
