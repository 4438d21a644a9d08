"""The sweeps service's read models: its sweeps and their trials from EVENTS, and the metric
reports of trial runs from METRICS (a second projection in the same file, as the tracking
service keeps its run metrics).

``sweeps`` has a row per sweep (its spec as JSON, its status: ``Running`` until it ended, the
status of its parent run), ``trials`` a row per proposal (the child run's status follows the
run's events), ``stops`` the policy's decisions. ``reports`` holds every finite number a trial
run logged, numbered per metric in the order the ingester stored them (``n``: the report's
interval), which is what a policy compares.

``SweepsProjection.on_change``, when set (the controller sets it), is called for each applied
event the controller acts on: a sweep's event, the end of a trial's run or of a sweep's run.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable

import msgspec

from cairn.domain.run import RunStatus
from cairn.projection import Delivered, Source, Tables, events_of
from cairn.proto import subjects
from cairn.proto.events import (
    Envelope,
    Event,
    RunCanceled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    RunSubmitted,
    SweepEnded,
    SweepSubmitted,
    TrialEnded,
    TrialProposed,
    TrialStopped,
)
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import METRICS

__all__ = ["TRIAL_PREFIX", "ReportsProjection", "SweepsProjection"]

#: the first token of a trial's run id (``derived_id("trial", sweep, index)``)
TRIAL_PREFIX = "trial-"

_STATUS = {
    RunStarted: RunStatus.RUNNING,
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunCanceled: RunStatus.CANCELED,
}


class SweepsProjection:
    name = "sweeps"
    version = 1
    tables: tuple[str, ...] = ("sweeps", "trials", "stops")
    source = events_of("sweep", "run")
    #: called after an event the controller acts on (set on the live instance only)
    on_change: Callable[[], None] | None = None

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('sweeps')} (workspace TEXT, run_id TEXT, experiment_name TEXT,"
            " spec TEXT, seed INTEGER, status TEXT, error TEXT, best_index INTEGER,"
            " submitted_at REAL, ended_at REAL, parent_status TEXT, seq INTEGER,"
            " PRIMARY KEY (workspace, run_id))"
        )
        db.execute(f"CREATE INDEX {t('sweeps')}_status ON {t('sweeps')} (status, parent_status)")
        db.execute(
            f"CREATE TABLE {t('trials')} (workspace TEXT, sweep_id TEXT, idx INTEGER,"
            " run_id TEXT, parameters TEXT, seen TEXT, status TEXT, ended TEXT, best REAL,"
            " last REAL, reports INTEGER, proposed_seq INTEGER, ended_seq INTEGER,"
            " PRIMARY KEY (workspace, sweep_id, idx))"
        )
        db.execute(f"CREATE UNIQUE INDEX {t('trials')}_run ON {t('trials')} (workspace, run_id)")
        db.execute(
            f"CREATE TABLE {t('stops')} (workspace TEXT, sweep_id TEXT, idx INTEGER,"
            " policy TEXT, interval INTEGER, value REAL, reference REAL, threshold REAL,"
            " reason TEXT, PRIMARY KEY (workspace, sweep_id, idx))"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env, seq = item.value, item.seq
        ws, key = env.workspace, (env.workspace, env.aggregate_id)
        at = env.timestamp.timestamp()
        data = env.data
        if self.on_change is not None and (
            env.aggregate_kind == "sweep"
            or isinstance(data, RunCompleted | RunFailed | RunCanceled)
        ):
            self.on_change()
        match data:
            case SweepSubmitted() as ev:
                db.execute(
                    f"INSERT OR IGNORE INTO {t('sweeps')} VALUES"
                    " (?,?,?,?,?,'Running','',NULL,?,NULL,NULL,?)",
                    (
                        *key,
                        ev.experiment_name,
                        msgspec.json.encode(ev.spec).decode(),
                        ev.seed,
                        at,
                        seq,
                    ),
                )
            case TrialProposed() as ev:
                db.execute(
                    f"INSERT OR IGNORE INTO {t('trials')} VALUES"
                    " (?,?,?,?,?,?,NULL,NULL,NULL,NULL,0,?,NULL)",
                    (
                        *key,
                        ev.index,
                        ev.run_id,
                        json.dumps(ev.parameters),
                        json.dumps(ev.seen),
                        seq,
                    ),
                )
            case TrialStopped() as ev:
                db.execute(
                    f"INSERT OR IGNORE INTO {t('stops')} VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        *key,
                        ev.index,
                        ev.policy,
                        ev.interval,
                        ev.value,
                        ev.reference,
                        ev.threshold,
                        ev.reason,
                    ),
                )
            case TrialEnded() as ev:
                db.execute(
                    f"UPDATE {t('trials')} SET ended=?, best=?, last=?, reports=?, ended_seq=?"
                    " WHERE workspace=? AND sweep_id=? AND idx=?",
                    (ev.status, ev.best, ev.last, ev.reports, seq, *key, ev.index),
                )
            case SweepEnded() as ev:
                db.execute(
                    f"UPDATE {t('sweeps')} SET status=?, error=?, best_index=?, ended_at=?, seq=?"
                    " WHERE workspace=? AND run_id=?",
                    (ev.status, ev.error, ev.best_index, at, seq, *key),
                )
            case RunCreated(controller="sweep"):
                self._parent(db, t, ws, env.aggregate_id, RunStatus.NOT_STARTED)
            case RunSubmitted(run_id=run_id):
                self._trial(db, t, ws, run_id, RunStatus.QUEUED)
            case RunStarted() | RunCompleted() | RunFailed() | RunCanceled():
                status = _STATUS[type(env.data)]
                self._trial(db, t, ws, env.aggregate_id, status)
                self._parent(db, t, ws, env.aggregate_id, status)

    @staticmethod
    def _trial(db: sqlite3.Connection, t: Tables, ws: str, run_id: str, status: str) -> None:
        if run_id.startswith(TRIAL_PREFIX):
            db.execute(
                f"UPDATE {t('trials')} SET status=? WHERE workspace=? AND run_id=?",
                (status, ws, run_id),
            )

    @staticmethod
    def _parent(db: sqlite3.Connection, t: Tables, ws: str, run_id: str, status: str) -> None:
        db.execute(
            f"UPDATE {t('sweeps')} SET parent_status=? WHERE workspace=? AND run_id=?",
            (status, ws, run_id),
        )


_decoder = msgspec.json.Decoder(MetricsLogged)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class ReportsProjection:
    name = "sweep_reports"
    version = 1
    tables: tuple[str, ...] = ("batches", "reports")
    source = Source(METRICS.name, subjects.METRICS_ALL, _decoder.decode)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(f"CREATE TABLE {t('batches')} (batch_id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            f"CREATE TABLE {t('reports')} (workspace TEXT, run_id TEXT, name TEXT, n INTEGER,"
            " value REAL, seq INTEGER, PRIMARY KEY (workspace, run_id, name, n)) WITHOUT ROWID"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[MetricsLogged]) -> None:
        batch = item.value
        if not batch.run_id.startswith(TRIAL_PREFIX):
            return
        fresh = db.execute(
            f"INSERT OR IGNORE INTO {t('batches')} VALUES (?)", (batch.batch_id,)
        ).rowcount
        if not fresh:
            return
        counts: dict[str, int] = {}
        rows = []
        for p in batch.points:
            number = _number(p.value) if p.kind == "scalar" else None
            if number is None:
                continue
            if p.name not in counts:  # n runs 1..count: the key's last n is one seek, not a scan
                counts[p.name] = db.execute(
                    f"SELECT coalesce(max(n), 0) FROM {t('reports')} WHERE workspace=?"
                    " AND run_id=? AND name=?",
                    (batch.workspace, batch.run_id, p.name),
                ).fetchone()[0]
            counts[p.name] += 1
            rows.append((batch.workspace, batch.run_id, p.name, counts[p.name], number, item.seq))
        db.executemany(f"INSERT INTO {t('reports')} VALUES (?,?,?,?,?,?)", rows)
