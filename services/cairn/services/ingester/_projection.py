"""The metrics read model: every point once, clustered by series, and a summary per series.

``points`` is a WITHOUT ROWID table keyed by (series, step, seq, idx): the points of one
metric of one run sit together in step order, so reading a history is one range scan. The
``series`` row per (workspace, run, name) carries the summary (count, last, min, max).

Numbers keep the type they were logged with: ``value``, ``min`` and ``max`` are declared
without a type (SQLite's BLOB affinity: a value is stored as given), because NUMERIC affinity
turns a float with an integral value into an integer (``1.0`` read back as ``1``) and REAL
turns every integer into a float. Version 3 made that change; its tables are rebuilt from
METRICS, whose batches kept ``1`` and ``1.0`` apart all along, so older points read back
right too.
"""

from __future__ import annotations

import json
import math
import operator
import sqlite3
from typing import Any

import msgspec

from cairn.projection import METRICS_LINGER_S, Delivered, Source, Tables
from cairn.proto import subjects
from cairn.proto.metrics import MetricPoint, MetricsLogged
from cairn.proto.streams import METRICS

__all__ = ["MetricsProjection", "stored_value"]

_decoder = msgspec.json.Decoder(MetricsLogged)


def stored_value(number: int | float | None, text: str | None) -> Any:
    """A point's value from its two columns (``value`` for finite numbers, ``json`` else)."""
    return number if text is None else json.loads(text)


def _columns(value: Any) -> tuple[int | float | None, str | None]:
    """(value, json): finite ints and floats go in ``value`` (stored as given: an int stays
    an int, a float a float),
    anything else (strings, bools, lists, non-finite tokens) in ``json``."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value, None
    return None, json.dumps(value)


def _by_name(points: list[MetricPoint]) -> dict[str, list[tuple[int, MetricPoint]]]:
    """A batch's (index, point) pairs by metric name, in order. A batch of one metric (what
    ``mlflow.log_batch`` of a series sends) is grouped without a pass per point."""
    names = {p.name for p in points}
    if len(names) == 1:
        return {names.pop(): list(enumerate(points))}
    by_name: dict[str, list[tuple[int, MetricPoint]]] = {}
    for idx, point in enumerate(points):
        by_name.setdefault(point.name, []).append((idx, point))
    return by_name


def _rows(series: int, seq: int, points: list[tuple[int, MetricPoint]]) -> list[tuple[Any, ...]]:
    """The ``points`` rows of a series: ``(series, step, seq, idx, time, value, json)``.
    Finite ints and floats are written inline (the common case, no call per point), anything
    else through :func:`_columns` or, for other kinds than scalars, as JSON."""
    return [
        (series, p.step, seq, idx, p.time, v, None)
        if p.kind == "scalar"
        and (type(v := p.value) is int or (type(v) is float and math.isfinite(v)))
        else (series, p.step, seq, idx, p.time, *_cells(p))
        for idx, p in points
    ]


def _cells(p: MetricPoint) -> tuple[int | float | None, str | None]:
    return _columns(p.value) if p.kind == "scalar" else (None, json.dumps(p.value))


#: the key of a point's row that orders it within its series in a batch: (step, idx)
_STEP_IDX = operator.itemgetter(1, 3)


class MetricsProjection:
    name = "metrics"
    version = 3
    tables: tuple[str, ...] = ("batches", "series", "points")
    source = Source(METRICS.name, subjects.METRICS_ALL, _decoder.decode, linger_s=METRICS_LINGER_S)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('batches')} (batch_id TEXT PRIMARY KEY, seq INTEGER)")
        db.execute(
            f"CREATE TABLE {t('series')} (series_id INTEGER PRIMARY KEY, workspace TEXT,"
            " run_id TEXT, name TEXT, experiment_id TEXT, kind TEXT, count INTEGER,"
            " last_json TEXT, min, max, last_step INTEGER, last_time REAL,"
            " UNIQUE (workspace, run_id, name))"
        )
        db.execute(
            f"CREATE INDEX {t('series')}_exp ON {t('series')} (workspace, experiment_id, name)"
        )
        db.execute(
            f"CREATE TABLE {t('points')} (series_id INTEGER, step INTEGER, seq INTEGER,"
            " idx INTEGER, time REAL, value, json TEXT,"
            " PRIMARY KEY (series_id, step, seq, idx)) WITHOUT ROWID"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[MetricsLogged]) -> None:
        batch, seq = item.value, item.seq
        fresh = db.execute(
            f"INSERT OR IGNORE INTO {t('batches')} VALUES (?, ?)", (batch.batch_id, seq)
        ).rowcount
        if not fresh:  # the same batch stored again after the dedupe window: apply once
            return
        for name, points in _by_name(batch.points).items():
            series = self._series(db, t, batch, name, points[-1][1].kind)
            rows = _rows(series, seq, points)
            db.executemany(f"INSERT INTO {t('points')} VALUES (?,?,?,?,?,?,?)", rows)
            self._summarise(db, t, series, rows)

    def _series(
        self, db: sqlite3.Connection, t: Tables, batch: MetricsLogged, name: str, kind: str
    ) -> int:
        key = (batch.workspace, batch.run_id, name)
        row = db.execute(
            f"SELECT series_id FROM {t('series')} WHERE workspace=? AND run_id=? AND name=?", key
        ).fetchone()
        if row is not None:
            return int(row[0])
        cursor = db.execute(
            f"INSERT INTO {t('series')} (workspace, run_id, name, experiment_id, kind, count,"
            " last_step) VALUES (?,?,?,?,?,0,-1)",
            (*key, batch.experiment_id, kind),
        )
        return int(cursor.lastrowid or 0)

    def _summarise(
        self, db: sqlite3.Connection, t: Tables, series: int, rows: list[tuple[Any, ...]]
    ) -> None:
        last = max(rows, key=_STEP_IDX)
        numbers = [r[5] for r in rows if r[5] is not None]
        low, high = min(numbers, default=None), max(numbers, default=None)
        last_json = last[6] if last[6] is not None else json.dumps(last[5])
        db.execute(
            f"UPDATE {t('series')} SET count = count + ?,"
            " last_json = CASE WHEN ? >= last_step THEN ? ELSE last_json END,"
            " last_time = CASE WHEN ? >= last_step THEN ? ELSE last_time END,"
            " min = min(coalesce(min, ?), coalesce(?, min)),"
            " max = max(coalesce(max, ?), coalesce(?, max)),"
            " last_step = max(last_step, ?) WHERE series_id = ?",
            (
                len(rows),
                last[1],
                last_json,
                last[1],
                last[4],
                low,
                low,
                high,
                high,
                last[1],
                series,
            ),
        )
