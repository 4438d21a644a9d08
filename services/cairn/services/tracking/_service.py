"""The tracking service: workspace, experiment and run commands, and their queries."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cairn import lookup
from cairn.bus import Connection, execute
from cairn.domain import experiment, run, workspace
from cairn.errors import InvalidInput, NotFound
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.artifacts import GetRunFile, ListRunFiles
from cairn.proto.commands import (
    COMMAND_TYPES,
    Accepted,
    AddRunProperties,
    CancelRun,
    CompleteRun,
    CreateExperiment,
    CreateRun,
    CreateWorkspace,
    FailRun,
    GetRun,
    ListExperiments,
    ListRuns,
    QueryResult,
    SetRunTags,
    StartRun,
)
from cairn.rpc import Request, Responder
from cairn.service import ProjectedService
from cairn.services.tracking._projection import TrackingProjection
from cairn.settings import Settings

__all__ = ["TrackingService"]

_RUN_COLUMNS = (
    *("workspace", "run_id", "experiment_id", "experiment_name", "display_name"),
    *("parent_run_id", "status", "error", "created_at", "created_by", "start_time"),
    *("end_time", "seq", "tags", "properties"),
)
_FILE_COLUMNS = ("path", "digest", "size", "created_at", "created_by")


_Command = (
    CreateWorkspace
    | CreateExperiment
    | CreateRun
    | StartRun
    | CompleteRun
    | FailRun
    | CancelRun
    | SetRunTags
    | AddRunProperties
)


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_RUN_COLUMNS, row, strict=True))
    out["tags"], out["properties"] = json.loads(out["tags"]), json.loads(out["properties"])
    return out


class TrackingService(ProjectedService):
    name = "tracking"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings, TrackingProjection())
        types = COMMAND_TYPES
        commands = Responder(
            conn,
            subjects=[subjects.command_filter(a) for a in ("workspace", "experiment", "run")],
            queue="tracking",
            types=types,
            routes={t.VERB: self._command for t in types},
        )
        queries = Responder(
            conn,
            subjects=[subjects.query_filter(a) for a in ("experiment", "run", "artifact")],
            queue="tracking",
            types=(ListExperiments, ListRuns, GetRun, ListRunFiles, GetRunFile),
            routes={
                ListExperiments.NAME: self._list_experiments,
                ListRuns.NAME: self._list_runs,
                GetRun.NAME: self._get_run,
                ListRunFiles.NAME: self._list_files,
                GetRunFile.NAME: self._get_file,
            },
        )
        self.responders = [commands, queries]

    # -- commands -------------------------------------------------------------------------

    async def _command(self, req: Request) -> Accepted:
        ctx, cache = req.context(), self.cache
        cmd: _Command = req.body
        if not isinstance(cmd, CreateWorkspace):
            await lookup.require_workspace(cache, req.workspace)
        match cmd:
            case CreateWorkspace(name=name):
                if name != req.workspace:
                    raise InvalidInput(f"workspace {name} must be created on its own subject")
                return await execute(ctx, workspace.AGGREGATE, name, cmd, cache=cache)
            case CreateExperiment(name=name):
                eid = subjects.name_to_id(name)
                return await execute(ctx, experiment.AGGREGATE, eid, cmd, cache=cache)
            case CreateRun(run_id=run_id):
                experiment_id = await self._check_run_parents(req.workspace, cmd)
                create = run.CreateResolvedRun(command=cmd, experiment_id=experiment_id)
                # a run id the client just made: decided on an empty history without a read
                return await execute(ctx, run.AGGREGATE, run_id, create, cache=cache, new=True)
            case _:
                return await execute(ctx, run.AGGREGATE, cmd.run_id, cmd, cache=cache)

    async def _check_run_parents(self, ws: str, cmd: CreateRun) -> str:
        eid = await lookup.experiment_id(self.cache, ws, cmd.experiment_name)
        if cmd.parent_run_id is not None:
            await lookup.run_state(self.cache, ws, cmd.parent_run_id)
        return eid

    # -- queries --------------------------------------------------------------------------

    async def _list_experiments(self, req: Request) -> QueryResult:
        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT e.experiment_id, e.name, e.created_at, e.created_by, COUNT(r.run_id)"
                f" FROM {t('experiments')} e LEFT JOIN {t('runs')} r"
                " ON r.workspace = e.workspace AND r.experiment_id = e.experiment_id"
                " WHERE e.workspace = ? GROUP BY e.experiment_id ORDER BY e.name",
                (req.workspace,),
            )
            keys = ("experiment_id", "name", "created_at", "created_by", "runs")
            return [dict(zip(keys, row, strict=True)) for row in rows]

        return await self.read(req, fn)

    async def _list_runs(self, req: Request) -> QueryResult:
        q: ListRuns = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            sql = f"SELECT * FROM {t('runs')} WHERE workspace = ?"
            args: list[Any] = [req.workspace]
            if q.experiment_name is not None:
                sql += " AND experiment_id = ?"
                args.append(subjects.name_to_id(q.experiment_name))
            if q.parent_run_id is not None:
                sql += " AND parent_run_id = ?"
                args.append(q.parent_run_id)
            sql += " ORDER BY created_at DESC, run_id LIMIT ?"
            args.append(max(1, min(q.limit, 10_000)))
            return [_run_row(row) for row in db.execute(sql, args)]

        return await self.read(req, fn)

    async def _get_run(self, req: Request) -> QueryResult:
        q: GetRun = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT * FROM {t('runs')} WHERE workspace = ? AND run_id = ?",
                (req.workspace, q.run_id),
            ).fetchone()
            return _run_row(row) if row else None

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"run {q.run_id} does not exist")
        return result

    async def _list_files(self, req: Request) -> QueryResult:
        q: ListRunFiles = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT path, digest, size, created_at, created_by FROM {t('files')}"
                " WHERE workspace = ? AND run_id = ? AND substr(path, 1, ?) = ? ORDER BY path",
                (req.workspace, q.run_id, len(q.prefix), q.prefix),
            )
            return [dict(zip(_FILE_COLUMNS, row, strict=True)) for row in rows]

        return await self.read(req, fn)

    async def _get_file(self, req: Request) -> QueryResult:
        q: GetRunFile = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT path, digest, size, created_at, created_by FROM {t('files')}"
                " WHERE workspace = ? AND run_id = ? AND path = ?",
                (req.workspace, q.run_id, q.path),
            ).fetchone()
            return dict(zip(_FILE_COLUMNS, row, strict=True)) if row else None

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"run {q.run_id} has no file {q.path!r}")
        return result
