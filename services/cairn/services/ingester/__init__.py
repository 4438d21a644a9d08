"""The metrics ingester: validates metric batches, stores them, projects and serves them."""

from __future__ import annotations

import asyncio

from cairn.services.ingester._projection import MetricsProjection
from cairn.services.ingester._service import IngesterService
from cairn.services.ingester._validate import validate_batch
from cairn.settings import Settings

__all__ = ["IngesterService", "MetricsProjection", "main", "validate_batch"]


async def main(settings: Settings) -> None:
    """Run the ingester alone until SIGTERM/SIGINT."""
    from cairn.service import install_stop_signals, run_services

    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_services(settings, [IngesterService], stop=stop)
