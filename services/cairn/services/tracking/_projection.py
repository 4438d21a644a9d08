"""The tracking read model: workspaces, experiments and runs.

``live`` holds the interactive runs that are Running (started without an agent: attempt 0),
with the wall-clock time of their start: what the liveness check (``_liveness``) watches.

``tags`` and ``properties`` hold a run's tags and properties one row per key (besides the JSON
objects on ``runs``), indexed by (workspace, key, value): what the runs query filters on.
"""

from __future__ import annotations

import json
import sqlite3

from cairn.domain.run import RunStatus
from cairn.domain.workspace import DEFAULT_DATASTORE
from cairn.projection import Delivered, Tables, events_of
from cairn.proto.events import (
    ArtifactCommitted,
    DefaultDatastoreSet,
    Envelope,
    Event,
    ExperimentArchived,
    ExperimentCreated,
    ExperimentRestored,
    RunAssigned,
    RunCanceled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunPropertiesAdded,
    RunRequeued,
    RunStarted,
    RunSubmitted,
    RunTagsSet,
    WorkspaceCreated,
)

__all__ = ["TrackingProjection"]

_STATUS = {
    RunStarted: RunStatus.RUNNING,
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunCanceled: RunStatus.CANCELED,
    RunSubmitted: RunStatus.QUEUED,
    RunAssigned: RunStatus.PREPARING,
    RunRequeued: RunStatus.QUEUED,
    RunCancelRequested: RunStatus.CANCEL_REQUESTED,
}


#: run id, experiment id, experiment name, display name, parent run id
_NewRun = tuple[str, str, str, str | None, str | None]


class TrackingProjection:
    name = "tracking"
    version = 7
    tables: tuple[str, ...] = (
        *("workspaces", "experiments", "runs", "files", "live"),
        *("tags", "properties"),
    )
    source = events_of("workspace", "experiment", "run", "staging")

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('workspaces')} (name TEXT PRIMARY KEY, description TEXT,"
            " created_at TEXT, created_by TEXT, seq INTEGER,"
            f" default_datastore TEXT NOT NULL DEFAULT '{DEFAULT_DATASTORE}')"
        )
        db.execute(
            f"CREATE TABLE {t('experiments')} (workspace TEXT, experiment_id TEXT, name TEXT,"
            " created_at TEXT, created_by TEXT, seq INTEGER, archived INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (workspace, experiment_id))"
        )
        db.execute(
            f"CREATE TABLE {t('runs')} (workspace TEXT, run_id TEXT, experiment_id TEXT,"
            " experiment_name TEXT, display_name TEXT, parent_run_id TEXT, status TEXT,"
            " error TEXT, created_at TEXT, created_by TEXT, start_time TEXT, end_time TEXT,"
            " seq INTEGER, tags TEXT NOT NULL DEFAULT '{}', properties TEXT NOT NULL DEFAULT '{}',"
            " controller TEXT, PRIMARY KEY (workspace, run_id))"
        )
        db.execute(
            f"CREATE TABLE {t('files')} (workspace TEXT, run_id TEXT, path TEXT, digest TEXT,"
            " size INTEGER, created_at TEXT, created_by TEXT, seq INTEGER,"
            " PRIMARY KEY (workspace, run_id, path))"
        )
        db.execute(f"CREATE INDEX {t('runs')}_exp ON {t('runs')} (workspace, experiment_id)")
        db.execute(
            f"CREATE INDEX {t('runs')}_created ON {t('runs')}"
            " (workspace, experiment_id, created_at, run_id)"
        )
        db.execute(f"CREATE INDEX {t('runs')}_parent ON {t('runs')} (workspace, parent_run_id)")
        for table in ("tags", "properties"):
            db.execute(
                f"CREATE TABLE {t(table)} (workspace TEXT, run_id TEXT, key TEXT, value TEXT,"
                " PRIMARY KEY (workspace, run_id, key)) WITHOUT ROWID"
            )
            db.execute(f"CREATE INDEX {t(table)}_kv ON {t(table)} (workspace, key, value)")
        db.execute(
            f"CREATE TABLE {t('live')} (workspace TEXT, run_id TEXT, started_at REAL,"
            " PRIMARY KEY (workspace, run_id))"
        )

    @staticmethod
    def _insert_run(
        db: sqlite3.Connection,
        t: Tables,
        env: Envelope[Event],
        seq: int,
        run: _NewRun,
        tags: dict[str, str],
        status: RunStatus,
        controller: str | None = None,
    ) -> None:
        """A new run: NotStarted (``RunCreated``) or Queued (a job's ``RunSubmitted``)."""
        created = (env.timestamp.isoformat(), env.actor, None, None, seq)
        db.execute(
            f"INSERT OR IGNORE INTO {t('runs')} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'{{}}',?)",
            (env.workspace, *run, status.value, "", *created, json.dumps(tags), controller),
        )
        TrackingProjection._set_keys(db, t("tags"), env.workspace, run[0], tags)

    @staticmethod
    def _set_keys(
        db: sqlite3.Connection, table: str, ws: str, run_id: str, values: dict[str, str]
    ) -> None:
        db.executemany(
            f"INSERT OR REPLACE INTO {table} VALUES (?,?,?,?)",
            [(ws, run_id, k, v) for k, v in values.items()],
        )

    def _workspace_or_experiment(
        self, db: sqlite3.Connection, t: Tables, env: Envelope[Event], seq: int
    ) -> bool:
        """Apply a workspace's or an experiment's event; False for any other."""
        at, ws = env.timestamp.isoformat(), env.workspace
        match env.data:
            case WorkspaceCreated(name=name, description=description):
                db.execute(
                    f"INSERT OR IGNORE INTO {t('workspaces')} VALUES (?,?,?,?,?,?)",
                    (name, description, at, env.actor, seq, DEFAULT_DATASTORE),
                )
            case DefaultDatastoreSet(datastore=datastore):
                db.execute(
                    f"UPDATE {t('workspaces')} SET default_datastore=?, seq=? WHERE name=?",
                    (datastore, seq, ws),
                )
            case ExperimentCreated(experiment_id=eid, name=name):
                db.execute(
                    f"INSERT OR IGNORE INTO {t('experiments')} VALUES (?,?,?,?,?,?,0)",
                    (ws, eid, name, at, env.actor, seq),
                )
            case ExperimentArchived() | ExperimentRestored():
                db.execute(
                    f"UPDATE {t('experiments')} SET archived=?, seq=?"
                    " WHERE workspace=? AND experiment_id=?",
                    (int(isinstance(env.data, ExperimentArchived)), seq, ws, env.aggregate_id),
                )
            case _:
                return False
        return True

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env, seq = item.value, item.seq
        if self._workspace_or_experiment(db, t, env, seq):
            return
        at, ws = env.timestamp.isoformat(), env.workspace
        match env.data:
            case RunCreated() as ev:
                ids = (ev.run_id, ev.experiment_id, ev.experiment_name)
                new = (*ids, ev.display_name, ev.parent_run_id)
                status = RunStatus.NOT_STARTED
                self._insert_run(db, t, env, seq, new, {}, status, ev.controller)
            case RunStarted(run_id=run_id, attempt=attempt):
                db.execute(
                    f"UPDATE {t('runs')} SET status=?, start_time=?, seq=?"
                    " WHERE workspace=? AND run_id=?",
                    (RunStatus.RUNNING.value, at, seq, ws, run_id),
                )
                if attempt == 0:  # interactive: no agent watches it (but a controller may)
                    db.execute(
                        f"INSERT OR IGNORE INTO {t('live')} SELECT ?,?,? WHERE NOT EXISTS"
                        f" (SELECT 1 FROM {t('runs')} WHERE workspace=? AND run_id=?"
                        " AND controller IS NOT NULL)",
                        (ws, run_id, env.timestamp.timestamp(), ws, run_id),
                    )
            case (
                RunTagsSet(run_id=run_id, tags=values)
                | RunPropertiesAdded(run_id=run_id, properties=values)
            ):
                column = "tags" if isinstance(env.data, RunTagsSet) else "properties"
                changed = db.execute(
                    f"UPDATE {t('runs')} SET {column} = json_patch({column}, ?), seq=?"
                    " WHERE workspace=? AND run_id=?",
                    (json.dumps(values), seq, ws, run_id),
                ).rowcount
                if changed:
                    self._set_keys(db, t(column), ws, run_id, values)
            case RunSubmitted(experiment_id=experiment_id) as ev if experiment_id is not None:
                name = ev.experiment_name or ""
                new = (ev.run_id, experiment_id, name, ev.display_name, ev.parent_run_id)
                self._insert_run(db, t, env, seq, new, ev.tags, RunStatus.QUEUED)
            case (
                RunSubmitted(run_id=run_id)
                | RunAssigned(run_id=run_id)
                | RunRequeued(run_id=run_id)
                | RunCancelRequested(run_id=run_id)
            ):
                db.execute(
                    f"UPDATE {t('runs')} SET status=?, seq=? WHERE workspace=? AND run_id=?",
                    (_STATUS[type(env.data)].value, seq, ws, run_id),
                )
            case ArtifactCommitted(run_id=run_id, path=path, digest=digest, size=size) if (
                env.aggregate_kind in ("run", "staging")  # staging: snapshots, model sources
            ):
                db.execute(
                    f"INSERT OR IGNORE INTO {t('files')} VALUES (?,?,?,?,?,?,?,?)",
                    (ws, run_id, path, digest, size, at, env.actor, seq),
                )
            case (
                RunCompleted(run_id=run_id) | RunCanceled(run_id=run_id) | RunFailed(run_id=run_id)
            ):
                error = env.data.error if isinstance(env.data, RunFailed) else ""
                db.execute(
                    f"UPDATE {t('runs')} SET status=?, error=?, end_time=?, seq=?"
                    " WHERE workspace=? AND run_id=?",
                    (_STATUS[type(env.data)].value, error, at, seq, ws, run_id),
                )
                db.execute(f"DELETE FROM {t('live')} WHERE workspace=? AND run_id=?", (ws, run_id))
