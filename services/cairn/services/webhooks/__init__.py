"""The webhooks service: the public event feed (``events.read``), webhooks (create, list,
delete, dead letters) and their deliveries as signed HTTP POSTs in Event Grid's shape."""

from __future__ import annotations

from cairn.service import service_main
from cairn.services.webhooks._delivery import consumer_name, event_grid_body
from cairn.services.webhooks._service import WebhookService

__all__ = ["WebhookService", "consumer_name", "event_grid_body", "main"]


main = service_main(WebhookService)
