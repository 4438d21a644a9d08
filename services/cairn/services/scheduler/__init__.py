"""The scheduler service: job submission, tickets, claims fenced by attempt, leases."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.scheduler._projection import JobsProjection
from cairn.services.scheduler._service import SchedulerService

__all__ = ["JobsProjection", "SchedulerService", "main"]


main = service_main(SchedulerService)
