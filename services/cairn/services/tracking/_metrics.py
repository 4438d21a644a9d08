"""The tracking service's own summary of each run's numeric metrics, projected from METRICS.

The runs query filters and sorts runs by a metric's last, smallest or largest value. Those
summaries are the ingester's too, but a service reads only its own read models, so the tracking
service follows METRICS with this second projection (its own name and checkpoint) into the same
SQLite file as its runs, where one query can join them.

``metrics`` has one row per (workspace, run, metric name) with a finite numeric value (an int
or a float; booleans, strings, lists, rows, tables, images and non-finite values are not
summarised): ``last`` (the value at the highest step; at equal steps the later batch wins),
``min`` and ``max``. An index per summary, (workspace, experiment_id, name, <summary>, run_id),
serves "the best N runs of an experiment by a metric" as an index scan.
"""

from __future__ import annotations

import math
import operator
import sqlite3

import msgspec

from cairn.projection import METRICS_LINGER_S, Delivered, Source, Tables
from cairn.proto import subjects
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import METRICS

__all__ = ["SUMMARIES", "RunMetricsProjection"]

#: the summaries a run query may filter and sort on
SUMMARIES = ("last", "min", "max")

_decoder = msgspec.json.Decoder(MetricsLogged)


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


#: (last value, min, max, last step) of a metric's finite numbers in one batch
_Summary = tuple[int | float, int | float, int | float, int]


def _summaries(batch: MetricsLogged) -> dict[str, _Summary]:
    """Each metric's summary of a batch: its finite numbers' value at the highest step (at
    equal steps the later point), min and max. A batch of one metric (what a client sends
    for one series) is summarised with builtins over the list, not a step per point."""
    points = batch.points
    names = {p.name for p in points}
    if len(names) != 1:
        return _summaries_by_name(batch)
    pairs = [
        (p.step, v)
        for p in points
        if p.kind == "scalar"
        and (type(v := p.value) is int or (type(v) is float and math.isfinite(v)))
    ]
    if not pairs:
        return {}
    numbers = [v for _, v in pairs]
    # the last of the highest steps: max over the reversed list returns its first maximum
    step, last = max(reversed(pairs), key=_STEP)
    return {names.pop(): (last, min(numbers), max(numbers), step)}


def _summaries_by_name(batch: MetricsLogged) -> dict[str, _Summary]:
    found: dict[str, _Summary] = {}
    for p in batch.points:
        number = _number(p.value) if p.kind == "scalar" else None
        if number is None:
            continue
        old = found.get(p.name)
        if old is None:
            found[p.name] = (number, number, number, p.step)
        else:
            last, step = (number, p.step) if p.step >= old[3] else (old[0], old[3])
            found[p.name] = (last, min(old[1], number), max(old[2], number), step)
    return found


_STEP = operator.itemgetter(0)


class RunMetricsProjection:
    name = "tracking_metrics"
    version = 1
    tables: tuple[str, ...] = ("batches", "metrics")
    source = Source(METRICS.name, subjects.METRICS_ALL, _decoder.decode, linger_s=METRICS_LINGER_S)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('batches')} (batch_id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            f"CREATE TABLE {t('metrics')} (workspace TEXT, run_id TEXT, name TEXT,"
            " experiment_id TEXT, last, min, max, last_step INTEGER, seq INTEGER,"
            " PRIMARY KEY (workspace, run_id, name)) WITHOUT ROWID"
        )
        for summary in SUMMARIES:
            db.execute(
                f"CREATE INDEX {t('metrics')}_{summary} ON {t('metrics')}"
                f" (workspace, experiment_id, name, {summary}, run_id)"
            )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[MetricsLogged]) -> None:
        batch, seq = item.value, item.seq
        fresh = db.execute(
            f"INSERT OR IGNORE INTO {t('batches')} VALUES (?)", (batch.batch_id,)
        ).rowcount
        if not fresh:  # the same batch stored again after the dedupe window: apply once
            return
        found = _summaries(batch)
        db.executemany(
            f"INSERT INTO {t('metrics')} VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (workspace, run_id, name) DO UPDATE SET"
            " last = CASE WHEN excluded.last_step >= last_step THEN excluded.last ELSE last END,"
            " min = min(min, excluded.min), max = max(max, excluded.max),"
            " last_step = max(last_step, excluded.last_step), seq = excluded.seq",
            [
                (batch.workspace, batch.run_id, name, batch.experiment_id, *summary, seq)
                for name, summary in found.items()
            ],
        )
