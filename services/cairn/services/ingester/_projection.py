"""The metrics read model: every point once, and a summary per (run, name)."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

import msgspec

from cairn.projection import Delivered, Source, Tables
from cairn.proto.metrics import NONFINITE, MetricsLogged
from cairn.proto.streams import METRICS

__all__ = ["MetricsProjection", "numeric"]

_decoder = msgspec.json.Decoder(MetricsLogged)


def numeric(value: Any) -> float | None:
    """The number a scalar stands for (non-finite tokens included), or None for strings."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    return None


def _sql_number(value: float | None) -> float | None:
    # SQLite stores NaN as NULL; keep it out of REAL columns and in the JSON column instead
    return None if value is None or math.isnan(value) else value


class MetricsProjection:
    name = "metrics"
    version = 1
    tables: tuple[str, ...] = ("batches", "points", "summary")
    source = Source(METRICS["name"], "cairn.metrics.>", _decoder.decode)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('batches')} (batch_id TEXT PRIMARY KEY, seq INTEGER)")
        db.execute(
            f"CREATE TABLE {t('points')} (workspace TEXT, run_id TEXT, name TEXT, kind TEXT,"
            " step INTEGER, time REAL, value REAL, json TEXT, seq INTEGER, idx INTEGER,"
            " PRIMARY KEY (seq, idx))"
        )
        db.execute(
            f"CREATE INDEX {t('points')}_series ON {t('points')} (workspace, run_id, name, step)"
        )
        db.execute(
            f"CREATE TABLE {t('summary')} (workspace TEXT, run_id TEXT, experiment_id TEXT,"
            " name TEXT, kind TEXT, count INTEGER, last REAL, last_json TEXT, min REAL,"
            " max REAL, last_step INTEGER, last_time REAL,"
            " PRIMARY KEY (workspace, run_id, name))"
        )
        db.execute(
            f"CREATE INDEX {t('summary')}_exp ON {t('summary')} (workspace, experiment_id, name)"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[MetricsLogged]) -> None:
        batch, seq = item.value, item.seq
        fresh = db.execute(
            f"INSERT OR IGNORE INTO {t('batches')} VALUES (?, ?)", (batch.batch_id, seq)
        ).rowcount
        if not fresh:  # the same batch stored again after the dedupe window: apply once
            return
        rows = []
        for idx, p in enumerate(batch.points):
            number = numeric(p.value) if p.kind == "scalar" else None
            rows.append(
                (batch.workspace, batch.run_id, p.name, p.kind, p.step, p.time,
                 _sql_number(number), json.dumps(p.value), seq, idx)
            )  # fmt: skip
        db.executemany(f"INSERT INTO {t('points')} VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        self._summarise(db, t, batch, rows)

    def _summarise(
        self, db: sqlite3.Connection, t: Tables, batch: MetricsLogged, rows: list[tuple[Any, ...]]
    ) -> None:
        per_name: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            per_name.setdefault(row[2], []).append(row)
        for name, points in per_name.items():
            last = max(points, key=lambda r: (r[4], r[9]))
            numbers = [r[6] for r in points if r[6] is not None]
            db.execute(
                f"INSERT INTO {t('summary')} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (workspace, run_id, name) DO UPDATE SET"
                " count = count + excluded.count,"
                " last = CASE WHEN excluded.last_step >= last_step"
                " THEN excluded.last ELSE last END,"
                " last_json = CASE WHEN excluded.last_step >= last_step"
                " THEN excluded.last_json ELSE last_json END,"
                " last_time = CASE WHEN excluded.last_step >= last_step"
                " THEN excluded.last_time ELSE last_time END,"
                " min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),"
                " max = max(coalesce(max, excluded.max), coalesce(excluded.max, max)),"
                " last_step = max(last_step, excluded.last_step)",
                (batch.workspace, batch.run_id, batch.experiment_id, name, last[3], len(points),
                 last[6], last[7], min(numbers, default=None), max(numbers, default=None),
                 last[4], last[5]),
            )  # fmt: skip
