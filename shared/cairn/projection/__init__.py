"""Read models projected from the event log into SQLite, exactly once."""

from cairn.projection._engine import Projection, ProjectionRunner, Tables, content_hash

__all__ = ["Projection", "ProjectionRunner", "Tables", "content_hash"]
