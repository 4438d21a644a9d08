"""Field types shared by every message."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["Digest", "Id", "MetricName", "Name", "TagKey", "TagValue", "Text"]

#: A subject-safe token: ids of workspaces, runs, commands, agents.
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: A free-form, user-facing name (mapped to an ``Id`` before it reaches a subject).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
#: Free text such as descriptions and error details.
Text = Annotated[str, msgspec.Meta(max_length=16384)]
#: A content address: ``sha256:`` and 64 lowercase hex digits.
Digest = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
TagValue = Annotated[str, msgspec.Meta(max_length=5000)]
#: Metric names: 1-255 characters (spaces and punctuation allowed, as in Azure ML); the
#: ingester refuses control characters once per distinct name in a batch (a pattern here
#: would run once per point, on every decode).
MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
