"""Validation of metric batches: one function, pure, used by the ingester before storing."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from cairn.errors import InvalidInput, PayloadTooLarge
from cairn.proto.metrics import NONFINITE, LogMetrics, MetricPoint

__all__ = ["MAX_COLUMNS", "MAX_LIST", "MAX_POINTS", "NonFinite", "validate_batch"]

MAX_POINTS = 10_000
MAX_LIST = 10_000
MAX_COLUMNS = 256
NonFinite = Literal["allow", "reject"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _scalar(value: Any, where: str, policy: NonFinite) -> None:
    nonfinite = (isinstance(value, str) and value in NONFINITE) or (
        isinstance(value, float) and not math.isfinite(value)
    )
    if nonfinite and policy == "reject":
        raise InvalidInput(f"{where}: non-finite value {value!r} refused by the ingester's policy")
    if not isinstance(value, (int, float, bool, str)):
        raise InvalidInput(
            f"{where}: expected a number, bool or string, got {type(value).__name__}"
        )


def _check_point(i: int, p: MetricPoint, policy: NonFinite) -> None:
    where = f"point {i} ({p.name!r}, {p.kind})"
    if p.step < 0 or not math.isfinite(p.time):
        raise InvalidInput(f"{where}: step must be >= 0 and time finite")
    value = p.value
    if p.kind == "scalar":
        _scalar(value, where, policy)
    elif p.kind == "image":
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: an image is the path of a run file")
    elif p.kind == "list":
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise InvalidInput(f"{where}: expected a list of at most {MAX_LIST} values")
        for v in value:
            _scalar(v, where, policy)
    else:
        if not isinstance(value, dict) or not 0 < len(value) <= MAX_COLUMNS:
            raise InvalidInput(f"{where}: expected 1 to {MAX_COLUMNS} columns")
        for column, cell in value.items():
            if p.kind == "row" or not isinstance(cell, list):
                if p.kind == "table":
                    raise InvalidInput(f"{where}: table column {column!r} must be a list")
                _scalar(cell, where, policy)
                continue
            for item in cell:
                _scalar(item, where, policy)


def validate_batch(cmd: LogMetrics, policy: NonFinite) -> None:
    """Raise a typed error for the first thing wrong with a batch (types per kind, non-finite
    numbers under a strict policy, control characters in names, sizes)."""
    if not cmd.points:
        raise InvalidInput("a metric batch needs at least one point")
    if len(cmd.points) > MAX_POINTS:
        raise PayloadTooLarge(f"{len(cmd.points)} points in one batch; at most {MAX_POINTS}")
    names: set[str] = set()
    for i, point in enumerate(cmd.points):
        names.add(point.name)
        value = point.value
        if point.kind == "scalar" and (
            type(value) is int or (isinstance(value, float) and math.isfinite(value))
        ):
            if point.step < 0 or not math.isfinite(point.time):
                raise InvalidInput(f"point {i}: step must be >= 0 and time finite")
            continue  # the common case, checked inline
        _check_point(i, point, policy)
    for name in names:
        if _CONTROL.search(name):
            raise InvalidInput(f"metric name {name[:80]!r} contains a control character")
