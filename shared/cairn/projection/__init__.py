"""Read models projected from a stream into SQLite, exactly once."""

from cairn.projection._as_of import AsOfReadModels
from cairn.projection._control import read_model_states, retry_quarantined, verify_read_models
from cairn.projection._engine import (
    EVENTS_SOURCE,
    METRICS_LINGER_S,
    Delivered,
    Projection,
    ProjectionRunner,
    Replayed,
    Source,
    Tables,
    content_hash,
    events_of,
    replay,
)
from cairn.projection._offline import Offline, dump_tables, replay_offline, subject_matches

__all__ = [
    "EVENTS_SOURCE",
    "METRICS_LINGER_S",
    "AsOfReadModels",
    "Delivered",
    "Offline",
    "Projection",
    "ProjectionRunner",
    "Replayed",
    "Source",
    "Tables",
    "content_hash",
    "dump_tables",
    "events_of",
    "read_model_states",
    "replay",
    "replay_offline",
    "retry_quarantined",
    "subject_matches",
    "verify_read_models",
]
