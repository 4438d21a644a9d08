"""The registry service: versioned models (environments, datastores, datasets and compute
targets follow)."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.registry._projection import RegistryProjection
from cairn.services.registry._service import RegistryService

__all__ = ["RegistryProjection", "RegistryService", "main"]


main = service_main(RegistryService)
