"""The artifact service: chunked uploads of run files into a content-addressed blob store."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.artifacts._service import ArtifactsService

__all__ = ["ArtifactsService", "main"]


main = service_main(ArtifactsService)
