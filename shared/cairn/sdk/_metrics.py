"""The in-process metric buffer: ``run.log`` appends here and returns; a flusher sends batches."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cairn.proto.metrics import MetricKind, MetricPoint

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_POINTS", "MetricBuffer", "batches", "scalar"]

MAX_BATCH_POINTS = 5000
MAX_BATCH_BYTES = 200 * 1024
_encoder = msgspec.json.Encoder()


def scalar(value: Any) -> float | int | bool | str:
    """A value as the wire carries it: non-finite floats as "NaN"/"Infinity"/"-Infinity",
    numpy scalars as Python numbers; anything else is a ``TypeError`` raised at the call."""
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        return scalar(item())
    raise TypeError(f"a metric value must be a number, bool or string, not {type(value).__name__}")


class MetricBuffer:
    """Thread-safe; ``add`` costs a lock and an append, never I/O."""

    def __init__(self, wake: Callable[[], None], threshold: int = MAX_BATCH_POINTS) -> None:
        self._wake = wake
        self.threshold = threshold
        self._points: list[MetricPoint] = []
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, kind: MetricKind, value: Any, step: int | None = None) -> None:
        with self._lock:
            if step is None:
                step = self._steps.get(name, 0)
            self._steps[name] = step + 1
            self._points.append(MetricPoint(name, kind, value, step, time.time()))
            n = len(self._points)
        if n == self.threshold:
            self._wake()

    def take(self) -> list[MetricPoint]:
        with self._lock:
            points, self._points = self._points, []
        return points

    def __len__(self) -> int:
        return len(self._points)


def batches(points: list[MetricPoint]) -> list[list[MetricPoint]]:
    """Split into batches of at most MAX_BATCH_POINTS points and MAX_BATCH_BYTES bytes, so no
    limit of the bus or the ingester ever reaches the caller."""
    out: list[list[MetricPoint]] = []
    pending = [points[i : i + MAX_BATCH_POINTS] for i in range(0, len(points), MAX_BATCH_POINTS)]
    while pending:
        batch = pending.pop(0)
        if len(batch) > 1 and len(_encoder.encode(batch)) > MAX_BATCH_BYTES:
            half = len(batch) // 2
            pending[:0] = [batch[:half], batch[half:]]
        else:
            out.append(batch)
    return out
