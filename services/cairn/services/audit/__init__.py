"""The audit service: signs checkpoints of each workspace's hash chain into the log."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.audit._service import AuditService

__all__ = ["AuditService", "main"]


main = service_main(AuditService)
