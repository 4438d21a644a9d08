"""The scheduler service: job submission, tickets, claims fenced by attempt, leases."""

from __future__ import annotations

import asyncio

from cairn.services.scheduler._projection import JobsProjection
from cairn.services.scheduler._service import SchedulerService
from cairn.settings import Settings

__all__ = ["JobsProjection", "SchedulerService", "main"]


async def main(settings: Settings) -> None:
    """Run the scheduler alone until SIGTERM/SIGINT."""
    from cairn.service import install_stop_signals, run_services

    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_services(settings, [SchedulerService], stop=stop)
