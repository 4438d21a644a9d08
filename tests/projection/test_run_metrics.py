"""The tracking service's metric summaries (``tracking_metrics``): what counts as a number,
which value is the last, and a batch applied once."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from cairn.projection import Delivered, Tables
from cairn.proto.metrics import MetricKind, MetricPoint, MetricsLogged, Value
from cairn.services.ingester import _projection as ingester_projection
from cairn.services.tracking import _metrics as tracking_metrics
from cairn.services.tracking._metrics import RunMetricsProjection


def _batch(
    batch_id: str, *points: tuple[str, Value, int], kind: MetricKind = "scalar"
) -> MetricsLogged:
    return MetricsLogged(
        batch_id=batch_id,
        workspace="ws",
        run_id="r1",
        experiment_id="e",
        actor="a",
        points=[MetricPoint(name=n, kind=kind, value=v, step=s, time=0.0) for n, v, s in points],
    )


def _summaries(*batches: MetricsLogged) -> dict[str, tuple[Any, ...]]:
    db = sqlite3.connect(":memory:")
    projection, t = RunMetricsProjection(), Tables("tracking_metrics", 1)
    projection.create(db, t)
    for seq, batch in enumerate(batches, 1):
        projection.apply(db, t, Delivered(seq, "cairn.metrics.ws.r1", batch))
    rows = db.execute(f"SELECT name, last, min, max, last_step FROM {t('metrics')}")
    return {name: tuple(rest) for name, *rest in rows}


def test_last_is_the_highest_step_and_the_later_batch_at_equal_steps() -> None:
    got = _summaries(
        _batch("b1", ("loss", 0.5, 3), ("loss", 0.9, 1), ("loss", 0.1, 2)),
        _batch("b2", ("loss", 0.7, 0)),  # an older step: not the last
        _batch("b3", ("loss", 0.6, 3)),  # the same step again: the later batch wins
    )
    assert got == {"loss": (0.6, 0.1, 0.9, 3)}


def test_only_finite_ints_and_floats_are_summarised_with_their_type() -> None:
    got = _summaries(
        _batch("b1", ("n", 1, 0), ("n", 2.0, 1), ("flag", True, 0), ("s", "text", 0)),
        _batch("b2", ("inf", "Infinity", 0), ("nan", float("nan"), 0)),
        _batch("b3", ("list", [1, 2], 0), kind="list"),
    )
    assert got == {"n": (2.0, 1, 2.0, 1)}
    assert type(got["n"][1]) is int and type(got["n"][0]) is float


def test_a_batch_stored_twice_is_applied_once() -> None:
    first = _batch("same", ("loss", 0.5, 1))
    got = _summaries(first, _batch("other", ("loss", 0.4, 1)), first)
    assert got == {"loss": (0.4, 0.4, 0.5, 1)}


#: batches of one metric (summarised and written without a step per point) and of several
#: (point by point): both give what the point-by-point reading gives
_ONE_METRIC: list[list[tuple[str, Value, int]]] = [
    [("loss", 0.5, 2), ("loss", 0.7, 2), ("loss", 0.1, 1)],  # equal steps: the later point
    [("loss", 3, 0), ("loss", 2.5, 0), ("loss", True, 5), ("loss", "x", 6)],
    [("loss", float("nan"), 9), ("loss", "Infinity", 9), ("loss", 1, 4), ("loss", 1.0, 4)],
    [("loss", "NaN", 1)],
    [("a", 1.0, 0), ("b", 2.0, 0), ("a", 0.5, 1)],
]


@pytest.mark.parametrize("points", _ONE_METRIC)
def test_a_batch_of_one_metric_is_summarised_as_point_by_point(
    points: list[tuple[str, Value, int]],
) -> None:
    batch = _batch("b", *points)
    got = tracking_metrics._summaries(batch)
    expected = tracking_metrics._summaries_by_name(batch)
    assert got == expected
    assert [tuple(map(type, s)) for s in got.values()] == [
        tuple(map(type, s)) for s in expected.values()
    ]


@pytest.mark.parametrize("points", _ONE_METRIC)
def test_points_rows_keep_each_value_as_logged(points: list[tuple[str, Value, int]]) -> None:
    batch = _batch("b", *points)
    for name, pairs in ingester_projection._by_name(batch.points).items():
        assert [i for i, _ in pairs] == [i for i, p in enumerate(batch.points) if p.name == name]
        rows = ingester_projection._rows(7, 3, pairs)
        expected = [
            (7, p.step, 3, i, p.time, *ingester_projection._columns(p.value)) for i, p in pairs
        ]
        assert rows == expected
        assert [type(r[5]) for r in rows] == [type(r[5]) for r in expected]
