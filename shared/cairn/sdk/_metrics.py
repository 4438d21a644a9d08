"""The in-process metric buffer: ``run.log`` appends here and returns; a flusher sends batches."""

from __future__ import annotations

import math
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cairn.errors import InvalidInput
from cairn.proto._base import INT64_MAX, INT64_MIN
from cairn.proto.metrics import MetricKind, MetricPoint

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_POINTS",
    "MetricBuffer",
    "batches",
    "scalar",
    "wire_value",
]

MAX_BATCH_POINTS = 5000
MAX_BATCH_BYTES = 200 * 1024
_encoder = msgspec.json.Encoder()


def scalar(value: Any) -> float | int | bool | str:
    """A value as the wire carries it: non-finite floats as "NaN"/"Infinity"/"-Infinity",
    numpy scalars as Python numbers; anything else is a ``TypeError`` raised at the call, and an
    integer past 64 bits an ``InvalidInput``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _int64(value, "a metric value")
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        return scalar(item())
    raise TypeError(f"a metric value must be a number, bool or string, not {type(value).__name__}")


def _int64(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInput(
            f"{what} {value} is outside the 64-bit integer range"
            f" [{INT64_MIN}, {INT64_MAX}]; log it as a float or a string"
        )
    return value


def _check_ints(value: Any) -> None:
    """Refuse an integer past 64 bits anywhere in a point's value (lists, rows, tables)."""
    if type(value) is int:
        _int64(value, "a metric value")
    elif isinstance(value, list):
        for item in value:
            _check_ints(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_ints(item)


def _step(name: str, step: Any) -> int:
    try:
        number = operator.index(step)  # numpy integers too
    except TypeError:
        number = -1
    if isinstance(step, bool) or not 0 <= number <= INT64_MAX:
        raise InvalidInput(f"step {step!r} of metric {name!r} must be an integer 0..{INT64_MAX}")
    return number


class MetricBuffer:
    """Thread-safe; ``add`` costs a lock and an append, never I/O."""

    def __init__(self, wake: Callable[[], None], threshold: int = MAX_BATCH_POINTS) -> None:
        self._wake = wake
        self.threshold = threshold
        self._points: list[MetricPoint] = []
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, kind: MetricKind, value: Any, step: int | None = None) -> None:
        """Buffer one point; an integer the wire would refuse (a step below 0 or past 64 bits,
        a value past 64 bits) is refused here, at the call, with ``InvalidInput``."""
        if step is not None:
            step = _step(name, step)
        if kind != "scalar" or type(value) is int:
            _check_ints(value)
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


def wire_value(kind: MetricKind, value: Any) -> Any:
    """A point's value as the wire carries it, by the same policy whichever API logged it:
    every scalar through :func:`scalar`, point by point and cell by cell, so a NaN or an
    infinity travels as its string (the ingester's policy then keeps or refuses it) and never
    spoils the batch's other points; a value of the wrong type is refused at the call."""
    if kind == "scalar":
        return scalar(value)
    if kind == "list":
        return [scalar(v) for v in value]
    if kind == "row":
        return {str(k): scalar(v) for k, v in value.items()}
    if kind == "table":
        return {str(k): [scalar(v) for v in column] for k, column in value.items()}
    return value  # an image: the path of a run file
