"""The scheduler's read model: one row per job, enough to decide what to do next.

Times are wall-clock seconds taken from the event timestamps, so a restarted scheduler sees the
same deadlines (when a re-queued run may go again, when a running one times out). ``alive_at``
is the last sign of life of the current attempt in the log (its claim, its start): a lease runs
from there until a renewal in the leases bucket moves it on.
"""

from __future__ import annotations

import sqlite3

from cairn.domain.run import RunStatus
from cairn.projection import Delivered, Tables, events_of
from cairn.proto.events import (
    Envelope,
    Event,
    RunAssigned,
    RunCanceled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSubmitted,
)

__all__ = ["ACTIVE", "JOB_COLUMNS", "JobsProjection"]

JOB_COLUMNS = tuple(
    "workspace run_id experiment_name display_name compute status priority queue_n attempt"
    " agent_id lost lease_s timeout_s not_before submitted_at started_at ended_at error command"
    " seq alive_at submitted_by".split()
)
ACTIVE = tuple(
    s.value
    for s in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED)
)
_END = {
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunCanceled: RunStatus.CANCELED,
}


class JobsProjection:
    name = "scheduler"
    version = 5
    tables: tuple[str, ...] = ("jobs", "names", "inputs")
    source = events_of("run")

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('jobs')} (workspace TEXT, run_id TEXT, experiment_name TEXT,"
            " display_name TEXT, compute TEXT, status TEXT, priority INTEGER, queue_n INTEGER,"
            " attempt INTEGER, agent_id TEXT, lost INTEGER, lease_s REAL, timeout_s REAL,"
            " not_before REAL, submitted_at REAL, started_at REAL, ended_at REAL, error TEXT,"
            " command TEXT, seq INTEGER, alive_at REAL, submitted_by TEXT,"
            " PRIMARY KEY (workspace, run_id))"
        )
        db.execute(f"CREATE INDEX {t('jobs')}_status ON {t('jobs')} (status)")
        # the next tickets of a compute target, read in order: no sort of the whole queue
        db.execute(
            f"CREATE INDEX {t('jobs')}_queue ON {t('jobs')}"
            " (workspace, compute, status, priority DESC, seq)"
        )
        db.execute(
            f"CREATE TABLE {t('inputs')} (workspace TEXT, dataset TEXT, version INTEGER,"
            " run_id TEXT, PRIMARY KEY (workspace, dataset, version, run_id))"
        )
        # names of runs submitted before RunSubmitted carried them: they came in RunCreated
        db.execute(
            f"CREATE TABLE {t('names')} (workspace TEXT, run_id TEXT, experiment_name TEXT,"
            " display_name TEXT, PRIMARY KEY (workspace, run_id))"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env, seq = item.value, item.seq
        if env.aggregate_kind != "run":
            return
        at, ws, ev = env.timestamp.timestamp(), env.workspace, env.data
        key = (ws, env.aggregate_id)
        update = f"UPDATE {t('jobs')} SET seq=?, "
        where = " WHERE workspace=? AND run_id=?"
        match ev:
            case RunCreated(experiment_name=experiment_name, display_name=display_name):
                db.execute(
                    f"INSERT OR IGNORE INTO {t('names')} VALUES (?,?,?,?)",
                    (*key, experiment_name, display_name),
                )
            case RunSubmitted(compute=compute, job=job):
                names = (ev.experiment_name, ev.display_name)
                if ev.experiment_id is None:  # submitted after its RunCreated (older history)
                    sql = f"SELECT experiment_name, display_name FROM {t('names')}" + where
                    names = db.execute(sql, key).fetchone() or ("", None)
                db.execute(
                    f"INSERT OR IGNORE INTO {t('jobs')} VALUES"
                    " (?,?,?,?,?,?,?,1,0,'',0,0,?,0,?,NULL,NULL,'',?,?,NULL,?)",
                    (
                        *key,
                        *names,
                        compute,
                        RunStatus.QUEUED.value,
                        job.priority,
                        job.timeout_s,
                        at,
                        " ".join(job.command)[:500],
                        seq,
                        env.actor,
                    ),
                )
                db.executemany(
                    f"INSERT OR IGNORE INTO {t('inputs')} VALUES (?,?,?,?)",
                    [(ws, i.dataset, i.version, env.aggregate_id) for i in job.inputs if i.dataset],
                )
            case RunAssigned(attempt=attempt, agent_id=agent_id, lease_s=lease_s):
                db.execute(
                    update + "status=?, attempt=?, agent_id=?, lease_s=?, started_at=NULL,"
                    " alive_at=?" + where,
                    (seq, RunStatus.PREPARING.value, attempt, agent_id, lease_s, at, *key),
                )
            case RunStarted():
                db.execute(
                    update
                    + "started_at=?, alive_at=?, status=CASE status WHEN ? THEN status ELSE ? END"
                    + where,
                    (seq, at, at, RunStatus.CANCEL_REQUESTED.value, RunStatus.RUNNING.value, *key),
                )
            case RunRequeued(delay_s=delay_s):
                db.execute(
                    update + "status=?, queue_n=queue_n+1, lost=lost+1, agent_id='',"
                    " not_before=?" + where,
                    (seq, RunStatus.QUEUED.value, at + delay_s, *key),
                )
            case RunCancelRequested():
                db.execute(
                    update + "status=?" + where, (seq, RunStatus.CANCEL_REQUESTED.value, *key)
                )
            case RunCompleted() | RunFailed() | RunCanceled():
                error = ev.error if isinstance(ev, RunFailed) else ""
                db.execute(
                    update + "status=?, ended_at=?, error=?" + where,
                    (seq, _END[type(ev)].value, at, error, *key),
                )
