"""The schedules service: schedules and event triggers that submit jobs."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.schedules._projection import SchedulesProjection
from cairn.services.schedules._service import SchedulesService

__all__ = ["SchedulesProjection", "SchedulesService", "main"]


main = service_main(SchedulesService)
