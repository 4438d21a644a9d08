"""The metrics ingester: validates metric batches, stores them, projects and serves them."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.ingester._projection import MetricsProjection
from cairn.services.ingester._service import IngesterService
from cairn.services.ingester._validate import validate_batch

__all__ = ["IngesterService", "MetricsProjection", "main", "validate_batch"]


main = service_main(IngesterService)
