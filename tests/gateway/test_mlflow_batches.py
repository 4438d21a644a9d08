"""How the MLflow API turns a batch's metrics into points and a history into MLflow's metrics:
what ``mlflow`` sends is converted inline, anything else point by point, with the same
result."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from cairn.services.mlflow import _runs
from cairn.services.mlflow._tracker import MlflowError

_METRICS: list[dict[str, Any]] = [
    {"key": "loss", "value": 0.25, "timestamp": 1_700_000_000_123, "step": 3},  # mlflow's own
    {"key": "loss", "value": 0.5, "timestamp": 1_700_000_000_123},  # no step
    {"key": "loss", "value": 0.5, "timestamp": 1_700_000_000_123, "step": None},
    {"key": "n", "value": 2, "timestamp": 5, "step": 1},  # an int: a float
    {"key": "s", "value": "-1.5", "timestamp": "7000", "step": "2"},  # text
    {"key": "nan", "value": "NaN", "timestamp": 1000, "step": 0},
    {"key": "inf", "value": float("inf"), "timestamp": 1000, "step": 0},
    {"key": "t", "value": 1.5, "timestamp": 1500.5, "step": 0},  # a float timestamp
    {"key": "neg", "value": 1.5, "timestamp": -1000, "step": 0},
]


def test_a_batch_converts_as_each_point_would() -> None:
    assert _runs._points(_METRICS) == [_runs._point(m) for m in _METRICS]
    stored = [p.value for p in _runs._points(_METRICS)]
    assert stored[3] == 2.0 and type(stored[3]) is float
    assert stored[5:7] == ["NaN", "Infinity"]


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "", "value": 1.0, "timestamp": 1, "step": 0},
        {"value": 1.0, "timestamp": 1, "step": 0},
        {"key": "b", "value": True, "timestamp": 1, "step": 0},
        {"key": "x", "value": "high", "timestamp": 1, "step": 0},
        ["key", 1.0],
    ],
)
def test_a_bad_metric_in_a_batch_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(MlflowError) as refused:
        _runs._points([_METRICS[0], bad])
    assert refused.value.code == "INVALID_PARAMETER_VALUE"


def test_a_history_reads_back_numbers_and_non_finite_values_as_mlflow_writes_them() -> None:
    points = [
        [0, 1.5, 0.25],
        [1, 2.0, 3],
        [2, 2.5, "NaN"],
        [3, 3.0, "-Infinity"],
        [4, 3.5, True],  # no number: left out
        [5, 4.0, "text"],
        [6, 4.5, float("inf")],
    ]
    got = [_runs._history_entry("m", p) for p in points]
    body = msgspec.json.decode(msgspec.json.encode([g for g in got if g is not None]))
    assert body == [
        {"key": "m", "value": 0.25, "timestamp": 1500, "step": 0},
        {"key": "m", "value": 3.0, "timestamp": 2000, "step": 1},
        {"key": "m", "value": "NaN", "timestamp": 2500, "step": 2},
        {"key": "m", "value": "-Infinity", "timestamp": 3000, "step": 3},
        {"key": "m", "value": "Infinity", "timestamp": 4500, "step": 6},
    ]
    assert math.isnan(float(body[2]["value"]))
