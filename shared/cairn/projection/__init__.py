"""Read models projected from a stream into SQLite, exactly once."""

from cairn.projection._control import read_model_states, retry_quarantined
from cairn.projection._engine import (
    EVENTS_SOURCE,
    METRICS_LINGER_S,
    Delivered,
    Projection,
    ProjectionRunner,
    Source,
    Tables,
    content_hash,
    events_of,
)

__all__ = [
    "EVENTS_SOURCE",
    "METRICS_LINGER_S",
    "Delivered",
    "Projection",
    "ProjectionRunner",
    "Source",
    "Tables",
    "content_hash",
    "events_of",
    "read_model_states",
    "retry_quarantined",
]
