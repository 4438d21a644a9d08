"""The tracking service: workspaces, experiments, runs."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.tracking._projection import TrackingProjection
from cairn.services.tracking._service import TrackingService

__all__ = ["TrackingProjection", "TrackingService", "main"]


main = service_main(TrackingService)
