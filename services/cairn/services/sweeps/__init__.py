"""The sweeps service: hyperparameter sweeps and the controller that proposes, submits, stops
and ends their trials."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.sweeps._projection import ReportsProjection, SweepsProjection
from cairn.services.sweeps._service import SweepsService

__all__ = ["ReportsProjection", "SweepsProjection", "SweepsService", "main"]


main = service_main(SweepsService)
