"""The orchestrator's read model: pipelines, their steps, the runs it watches, reuse keys.

* ``pipelines``: one row per pipeline run; ``seq`` moves with every event about the pipeline
  and with the end of one of its runs, so the reconcile loop looks again only at pipelines
  that changed.
* ``steps``: what the pipeline aggregate decided per step, with times (``cairn job show``).
* ``watch``: the runs of a pipeline (its own run, its steps' runs) and their last status,
  taken from run events; a step's run is watched from its ``PipelineStepStarted``, which is
  appended before the run is submitted, so no end of it is missed.
* ``reuse``: the completed step runs a later step with the same reuse key may stand for
  (the latest per key).
* ``published``: the published pipelines (``pipeline.published.list``).

``on_change``, when set (the orchestrator sets it), is called for each applied event the
reconcile loop acts on at once: a pipeline submitted, a step that did not complete, and a
watched run's end (not for the orchestrator's own decisions, which the pass that took them
has followed through: one pass fewer per decision).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from cairn.projection import Delivered, Tables, events_of
from cairn.proto.events import (
    Envelope,
    Event,
    PipelineEnded,
    PipelinePublished,
    PipelineStepEnded,
    PipelineStepReused,
    PipelineStepStarted,
    PipelineSubmitted,
    RunCanceled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    RunSubmitted,
)

__all__ = ["PipelinesProjection", "read_pipeline", "read_published"]

_RUN_STATUS: dict[type[Event], str] = {
    RunCreated: "NotStarted",
    RunSubmitted: "Queued",
    RunStarted: "Running",
    RunCompleted: "Completed",
    RunFailed: "Failed",
    RunCanceled: "Canceled",
}

_ENDED = frozenset({"Completed", "Failed", "Canceled"})


def _wakes(ev: Event) -> bool:
    """Whether a pipeline's event calls for a pass at once: its submission (taken by the
    replica that accepted it, at once, unless that one died), and a step that did not
    complete (the pipeline stops or skips what follows). The rest are the orchestrator's own
    decisions, whose pass has followed them through already; the next pass over the
    pipeline, or the full one every few seconds, sees them anyway (``seq`` moves)."""
    if isinstance(ev, PipelineSubmitted):
        return True
    return isinstance(ev, PipelineStepEnded) and ev.status != "Completed"


class PipelinesProjection:
    name = "pipelines"
    version = 2
    tables: tuple[str, ...] = ("pipelines", "steps", "watch", "reuse", "published")
    source = events_of("pipeline", "run", "published_pipeline")
    #: called after an event the orchestrator acts on (set on the live instance only)
    on_change: Callable[[], None] | None = None

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('pipelines')} (workspace TEXT, run_id TEXT, experiment_name TEXT,"
            " display_name TEXT, status TEXT, error TEXT, submitted_at REAL, ended_at REAL,"
            " seq INTEGER, PRIMARY KEY (workspace, run_id))"
        )
        db.execute(f"CREATE INDEX {t('pipelines')}_status ON {t('pipelines')} (status, seq)")
        db.execute(
            f"CREATE TABLE {t('steps')} (workspace TEXT, pipeline TEXT, step TEXT, run_id TEXT,"
            " status TEXT, reused_run_id TEXT, reason TEXT, error TEXT, started_at REAL,"
            " ended_at REAL, PRIMARY KEY (workspace, pipeline, step))"
        )
        db.execute(
            f"CREATE TABLE {t('watch')} (workspace TEXT, run_id TEXT, pipeline TEXT,"
            " status TEXT, error TEXT, PRIMARY KEY (workspace, run_id))"
        )
        db.execute(
            f"CREATE TABLE {t('reuse')} (workspace TEXT, reuse_key TEXT, run_id TEXT,"
            " PRIMARY KEY (workspace, reuse_key))"
        )
        db.execute(
            f"CREATE TABLE {t('published')} (workspace TEXT, pipeline_id TEXT, name TEXT,"
            " version TEXT, description TEXT, parameters TEXT, published_at REAL, seq INTEGER,"
            " PRIMARY KEY (workspace, pipeline_id))"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env, seq = item.value, item.seq
        ws, ev, at = env.workspace, env.data, env.timestamp.timestamp()
        if env.aggregate_kind == "run":
            self._run(db, t, ws, env.aggregate_id, ev, seq)
            return
        if isinstance(ev, PipelinePublished):
            db.execute(
                f"INSERT OR IGNORE INTO {t('published')} VALUES (?,?,?,?,?,?,?,?)",
                (
                    ws,
                    ev.pipeline_id,
                    ev.name,
                    ev.version,
                    ev.description,
                    json.dumps(ev.parameters),
                    at,
                    seq,
                ),
            )
            return
        pid = env.aggregate_id
        touch = f"UPDATE {t('pipelines')} SET seq=? WHERE workspace=? AND run_id=?"
        match ev:
            case PipelineSubmitted():
                db.execute(
                    f"INSERT OR IGNORE INTO {t('pipelines')} VALUES (?,?,?,?,?,?,?,?,?)",
                    (ws, pid, ev.experiment_name, ev.display_name, "Running", "", at, None, seq),
                )
                db.execute(
                    f"INSERT OR IGNORE INTO {t('watch')} VALUES (?,?,?,?,?)",
                    (ws, pid, pid, None, ""),
                )
            case (
                PipelineStepStarted(step=step, run_id=run_id)
                | PipelineStepReused(step=step, run_id=run_id)
            ):
                reused = ev.reused_run_id if isinstance(ev, PipelineStepReused) else None
                reason = ev.reason if isinstance(ev, PipelineStepReused) else ""
                status = "Reused" if reused else "Running"
                db.execute(
                    f"INSERT OR IGNORE INTO {t('steps')} VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (ws, pid, step, run_id, status, reused, reason, "", at, None),
                )
                db.execute(
                    f"INSERT OR IGNORE INTO {t('watch')} VALUES (?,?,?,?,?)",
                    (ws, run_id, pid, None, ""),
                )
            case PipelineStepEnded(step=step, status=status, error=error, reuse_key=key):
                db.execute(
                    f"INSERT OR IGNORE INTO {t('steps')} VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (ws, pid, step, ev.run_id, status, None, "", error, None, at),
                )
                db.execute(
                    f"UPDATE {t('steps')} SET status=?, error=?, ended_at=?"
                    " WHERE workspace=? AND pipeline=? AND step=?",
                    (status, error, at, ws, pid, step),
                )
                if key and ev.run_id:
                    db.execute(
                        f"INSERT OR REPLACE INTO {t('reuse')} VALUES (?,?,?)", (ws, key, ev.run_id)
                    )
            case PipelineEnded(status=status, error=error):
                db.execute(
                    f"UPDATE {t('pipelines')} SET status=?, error=?, ended_at=?"
                    " WHERE workspace=? AND run_id=?",
                    (status, error, at, ws, pid),
                )
        db.execute(touch, (seq, ws, pid))
        if self.on_change is not None and _wakes(ev):
            self.on_change()

    def _run(
        self, db: sqlite3.Connection, t: Tables, ws: str, run_id: str, ev: Event, seq: int
    ) -> None:
        status = _RUN_STATUS.get(type(ev))
        if status is None:
            return
        error = ev.error if isinstance(ev, RunFailed) else ""
        row = db.execute(
            f"UPDATE {t('watch')} SET status=?, error=? WHERE workspace=? AND run_id=?"
            " RETURNING pipeline",
            (status, error, ws, run_id),
        ).fetchone()
        # the pipeline moved, for its orchestrator, when one of its runs ended: a run queued
        # or started calls for nothing (a pass over the pipeline per such event cost ≈ 1 ms
        # of CPU each, two per step), and every active pipeline is looked at every few
        # seconds regardless
        if row is not None and status in _ENDED:
            db.execute(
                f"UPDATE {t('pipelines')} SET seq=? WHERE workspace=? AND run_id=?",
                (seq, ws, row[0]),
            )
            if self.on_change is not None:
                self.on_change()


def read_pipeline(db: sqlite3.Connection, t: Tables, ws: str, run_id: str) -> dict[str, Any] | None:
    """A pipeline's row with its steps (those started or ended), or None."""
    row = db.execute(
        f"SELECT run_id, experiment_name, display_name, status, error, submitted_at,"
        f" ended_at FROM {t('pipelines')} WHERE workspace=? AND run_id=?",
        (ws, run_id),
    ).fetchone()
    if row is None:
        return None
    keys = "run_id experiment_name display_name status error submitted_at ended_at"
    found = dict(zip(keys.split(), row, strict=True))
    rows = db.execute(
        f"SELECT step, run_id, status, reused_run_id, reason, error, started_at, ended_at"
        f" FROM {t('steps')} WHERE workspace=? AND pipeline=? ORDER BY started_at, step",
        (ws, run_id),
    )
    keys = "step run_id status reused_run_id reason error started_at ended_at"
    found["steps"] = [dict(zip(keys.split(), r, strict=True)) for r in rows]
    return found


def read_published(db: sqlite3.Connection, t: Tables, ws: str) -> list[dict[str, Any]]:
    """The workspace's published pipelines, newest first."""
    rows = db.execute(
        f"SELECT pipeline_id, name, version, description, parameters, published_at"
        f" FROM {t('published')} WHERE workspace=? ORDER BY seq DESC",
        (ws,),
    )
    keys = "id name version description parameters published_at"
    found = [dict(zip(keys.split(), r, strict=True)) for r in rows]
    for item in found:
        item["parameters"] = json.loads(item["parameters"])
    return found
