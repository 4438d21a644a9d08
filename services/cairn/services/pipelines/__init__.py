"""The pipelines service: pipeline submission and the orchestrator that runs the steps."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.pipelines._projection import PipelinesProjection
from cairn.services.pipelines._service import PipelinesService

__all__ = ["PipelinesProjection", "PipelinesService", "main"]


main = service_main(PipelinesService)
