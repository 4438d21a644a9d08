"""Small builders shared by tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cairn.proto.events import Envelope, Event, ExperimentCreated


def envelope(
    ws: str,
    aggregate_id: str,
    event: Event | None = None,
    *,
    cause: str = "c",
    kind: str = "experiment",
    actor: str = "test",
) -> Envelope[Event]:
    event = event or ExperimentCreated(experiment_id=aggregate_id, name=aggregate_id)
    return Envelope(
        event_id=uuid.uuid4().hex,
        type=type(event).__name__,
        schema_version=type(event).VERSION,
        workspace=ws,
        aggregate_kind=kind,
        aggregate_id=aggregate_id,
        timestamp=datetime.now(UTC),
        actor=actor,
        causation_id=cause,
        correlation_id=cause,
        data=event,
    )
