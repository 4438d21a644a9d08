"""The tracking service: workspace, experiment and run commands, and their queries; a
workspace's members (``member.*``: the admin's commands, and the members query); and the
process manager that fails interactive runs whose process stopped beating (``_liveness``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import RECONNECT_MAX_S, CommandContext, Connection, execute
from cairn.domain import experiment, run, workspace
from cairn.errors import InvalidInput, InvalidTransition, NotFound, PermissionDenied
from cairn.log import get_logger
from cairn.members import Membership
from cairn.projection import ProjectionRunner, Tables
from cairn.proto import subjects
from cairn.proto.artifacts import GetRunFile, ListRunFiles
from cairn.proto.commands import (
    COMMAND_TYPES,
    Accepted,
    AddRunProperties,
    ArchiveExperiment,
    CancelRun,
    Command,
    CompleteRun,
    CreateExperiment,
    CreateRun,
    CreateWorkspace,
    FailRun,
    GetExperiment,
    GetHistory,
    GetRun,
    HeartbeatRun,
    ListExperiments,
    ListRuns,
    ListWorkspaces,
    QueryResult,
    SetDefaultDatastore,
    SetRunTags,
    StartRun,
)
from cairn.proto.feed import redact
from cairn.proto.jobs import derived_id
from cairn.proto.members import (
    MEMBER_COMMAND_TYPES,
    AddMember,
    AdoptWorkspace,
    ListMembers,
    RemoveMember,
)
from cairn.proto.metrics import MetricsLogged
from cairn.proto.subjects import validate_token
from cairn.rpc import ADMIN_ACTOR, SERVICE_ACTOR, Request, Responder, gate_of, slot_lent
from cairn.secrets import roles_of
from cairn.service import ProjectedService
from cairn.services.tracking._liveness import Beat, Heartbeats, bound_s, lost_reason
from cairn.services.tracking._metrics import RunMetricsProjection
from cairn.services.tracking._projection import TrackingProjection
from cairn.services.tracking._runs_filter import compile_query
from cairn.services.tracking._runs_query import RUN_COLUMNS, RunsPage, list_runs
from cairn.settings import Settings

__all__ = ["TrackingService"]

log = get_logger("cairn.tracking")

_FILE_COLUMNS = ("path", "digest", "size", "created_at", "created_by")
_ENDED = tuple(s.value for s in run.RunStatus if s.terminal)


_Command = (
    CreateWorkspace
    | CreateExperiment
    | ArchiveExperiment
    | SetDefaultDatastore
    | CreateRun
    | StartRun
    | CompleteRun
    | FailRun
    | CancelRun
    | SetRunTags
    | AddRunProperties
)


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(RUN_COLUMNS, row, strict=True))
    out["tags"], out["properties"] = json.loads(out["tags"]), json.loads(out["properties"])
    return out


class TrackingService(ProjectedService):
    name = "tracking"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings, TrackingProjection())
        self.settings = settings
        #: the runs' metric summaries, from METRICS, in the same file as the runs (its own
        #: checkpoint): what the runs query filters and sorts on
        self.run_metrics: ProjectionRunner[MetricsLogged] = ProjectionRunner(
            conn,
            settings.state_path / f"{self.projection.projection.name}.sqlite",
            RunMetricsProjection(),
        )
        self._stop_metrics = asyncio.Event()
        self._metrics_task: asyncio.Task[None] | None = None
        members = Responder(
            conn,
            subjects=[subjects.command_filter("member"), subjects.query_filter("member")],
            queue="tracking",
            types=(*MEMBER_COMMAND_TYPES, ListMembers),
            routes={
                **{t.VERB: self._member_command for t in MEMBER_COMMAND_TYPES},
                ListMembers.NAME: self._list_members,
            },
        )
        self.heartbeat_s = settings.run_heartbeat_s
        self.beats = Heartbeats(conn)
        #: when this replica may start failing silent runs (after a start or a reconnect)
        self._watching_from = time.monotonic()
        #: after an outage, how long a run's process may take to be back beyond this replica
        self._reconnect_s = 0.0
        types: tuple[type[Command], ...] = (*COMMAND_TYPES, HeartbeatRun)
        commands = Responder(
            conn,
            subjects=[subjects.command_filter(a) for a in ("workspace", "experiment", "run")],
            queue="tracking",
            types=types,
            routes={
                **{t.VERB: self._command for t in COMMAND_TYPES},
                HeartbeatRun.VERB: self._beat,
            },
        )
        queries = Responder(
            conn,
            subjects=[
                subjects.query_filter(a)
                for a in ("workspace", "experiment", "run", "artifact", "history")
            ],
            queue="tracking",
            types=(
                ListWorkspaces,
                ListExperiments,
                GetExperiment,
                ListRuns,
                GetRun,
                ListRunFiles,
                GetRunFile,
                GetHistory,
            ),
            routes={
                GetHistory.NAME: self._history,
                ListWorkspaces.NAME: self._list_workspaces,
                ListExperiments.NAME: self._list_experiments,
                GetExperiment.NAME: self._get_experiment,
                ListRuns.NAME: self._list_runs,
                GetRun.NAME: self._get_run,
                ListRunFiles.NAME: self._list_files,
                GetRunFile.NAME: self._get_file,
            },
        )
        self.responders = [commands, queries, members]

    # -- lifecycle: the liveness loop beside the responders --------------------------------

    async def start(self) -> None:
        await self.beats.start()
        self._watching_from = time.monotonic()
        self._metrics_task = asyncio.create_task(self.run_metrics.run(self._stop_metrics))
        await super().start()

    async def run(self, stop: asyncio.Event) -> None:
        watch = asyncio.create_task(self._watch(stop))
        try:
            await super().run(stop)
        finally:
            await watch
            await self.beats.stop()
            self._stop_metrics.set()
            if self._metrics_task is not None:
                await self._metrics_task
            self.run_metrics.close()

    async def _watch(self, stop: asyncio.Event) -> None:
        tick = max(0.05, min(1.0, self.heartbeat_s / 2))
        while not stop.is_set():
            try:
                await self.reap()
            except Exception as exc:  # the bus may be away; the next pass tries again
                log.warning("liveness_check_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)

    async def reap(self) -> None:
        """One pass over the live interactive runs: fail those silent for their bound."""
        if not self.conn.nc.is_connected:  # beats cannot reach anyone now: start again after,
            # and give the runs' processes the time their own reconnect may take on top
            self._watching_from = time.monotonic()
            self._reconnect_s = RECONNECT_MAX_S
            return

        def live(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str, float]]:
            return list(db.execute(f"SELECT workspace, run_id, started_at FROM {t('live')}"))

        rows, _ = self.projection.read(live)
        watching_s = time.monotonic() - self._watching_from
        for ws, run_id, started_at in rows:
            beat = self.beats.seen.get((ws, run_id))
            grace = bound_s(self.heartbeat_s, beat) + self._reconnect_s
            if watching_s < grace or self._alive(started_at, beat):
                continue
            beat = await self.beats.latest(ws, run_id)  # the bucket itself, not the mirror
            if not self._alive(started_at, beat):
                await self._lose(ws, run_id, bound_s(self.heartbeat_s, beat))
        await self._forget_ended({(ws, run_id) for ws, run_id, _ in rows})

    def _alive(self, started_at: float, beat: Beat | None) -> bool:
        last = max(started_at, beat.at if beat is not None else 0.0)
        return time.time() <= last + bound_s(self.heartbeat_s, beat)

    async def _lose(self, ws: str, run_id: str, bound: float) -> None:
        reason = lost_reason(bound)
        log.info("run_lost", workspace=ws, run_id=run_id, reason=reason)
        ctx = CommandContext(
            workspace=ws, command_id=derived_id("silent", ws, run_id), actor="cairn-tracking"
        )
        command = run.LoseRun(run_id=run_id, reason=reason)
        await execute(ctx, run.AGGREGATE, run_id, command, cache=self.cache)
        await self.beats.forget(ws, run_id)

    async def _forget_ended(self, live: set[tuple[str, str]]) -> None:
        """Delete the beats of runs that have ended (a beat may arrive after the end, or at
        another replica than the one that recorded it)."""
        left = [key for key in self.beats.seen if key not in live]
        if not left:
            return

        def ended(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str]]:
            sql = f"SELECT status FROM {t('runs')} WHERE workspace=? AND run_id=?"
            rows = ((key, db.execute(sql, key).fetchone()) for key in left)
            return [key for key, row in rows if row is not None and row[0] in _ENDED]

        for ws, run_id in self.projection.read(ended)[0]:
            await self.beats.forget(ws, run_id)

    # -- commands -------------------------------------------------------------------------

    async def _beat(self, req: Request) -> Accepted:
        """A beat of an open interactive run: kept in the bucket, never appended."""
        cmd: HeartbeatRun = req.body
        state = await lookup.run_state(self.cache, req.workspace, cmd.run_id)
        if state.job is not None:
            raise InvalidInput(f"run {cmd.run_id} is a job: its agent reports for it")
        status, error = state.status.value, state.error
        if not state.status.terminal:  # the cache may be behind another replica's decision
            status, error = self._ended_as(req.workspace, cmd.run_id) or (status, error)
        if status in _ENDED:  # a process whose run was failed as lost learns it here
            raise InvalidTransition(f"run {cmd.run_id} is {status}{': ' + error if error else ''}")
        await self.beats.beat(req.workspace, cmd.run_id, cmd.every_s)
        return Accepted(command_id=cmd.command_id, aggregate_id=cmd.run_id, seq=0)

    def _ended_as(self, ws: str, run_id: str) -> tuple[str, str] | None:
        """The run's status and error as the read model has them (None: not there yet)."""

        def fn(db: sqlite3.Connection, t: Tables) -> tuple[str, str] | None:
            sql = f"SELECT status, error FROM {t('runs')} WHERE workspace=? AND run_id=?"
            row = db.execute(sql, (ws, run_id)).fetchone()
            return (str(row[0]), str(row[1] or "")) if row else None

        found: tuple[str, str] | None = self.projection.read(fn)[0]
        return found

    async def _command(self, req: Request) -> Accepted:
        ctx, cache = req.context(), self.cache
        cmd: _Command = req.body
        if not isinstance(cmd, CreateWorkspace):
            await lookup.require_workspace(cache, req.workspace)
        match cmd:
            case CreateWorkspace(name=name):
                if name != req.workspace:
                    raise InvalidInput(f"workspace {name} must be created on its own subject")
                if req.actor == SERVICE_ACTOR:
                    return await execute(ctx, workspace.AGGREGATE, name, cmd, cache=cache)
                # a person: its first member, with the roles the server gives them (at least
                # data scientist, the only role that may send workspace commands)
                roles = ("data_scientist", *roles_of(self.settings, req.actor))
                founded = workspace.CreateAsMember(command=cmd, user=req.actor, roles=roles)
                return await execute(ctx, workspace.AGGREGATE, name, founded, cache=cache)
            case SetDefaultDatastore():
                return await execute(ctx, workspace.AGGREGATE, req.workspace, cmd, cache=cache)
            case CreateExperiment(name=name) | ArchiveExperiment(name=name):
                eid = subjects.name_to_id(name)
                return await execute(ctx, experiment.AGGREGATE, eid, cmd, cache=cache)
            case CreateRun(run_id=run_id):
                experiment_id = await self._check_run_parents(req.workspace, cmd)
                create = run.CreateResolvedRun(command=cmd, experiment_id=experiment_id)
                # a run id the client just made: decided on an empty history without a read
                return await execute(ctx, run.AGGREGATE, run_id, create, cache=cache, new=True)
            case CompleteRun() | FailRun() | CancelRun():
                accepted = await execute(ctx, run.AGGREGATE, cmd.run_id, cmd, cache=cache)
                if (req.workspace, cmd.run_id) in self.beats.seen:  # it beats no more
                    await self.beats.forget(req.workspace, cmd.run_id)
                return accepted
            case _:
                return await execute(ctx, run.AGGREGATE, cmd.run_id, cmd, cache=cache)

    async def _member_command(self, req: Request) -> Accepted:
        """The admin's: the server lets no one else publish ``member.*`` commands (people and
        agents have no such permission; the services' user is denied them), so a request from
        inside the services' account here is the admin's, and is recorded as its actor."""
        if req.actor != SERVICE_ACTOR:
            raise PermissionDenied(f"only the admin manages the members of {req.workspace}")
        cmd: AddMember | RemoveMember | AdoptWorkspace = req.body
        await lookup.require_workspace(self.cache, req.workspace)
        ctx = dataclasses.replace(req, actor=ADMIN_ACTOR).context()
        return await execute(ctx, workspace.AGGREGATE, req.workspace, cmd, cache=self.cache)

    async def _check_run_parents(self, ws: str, cmd: CreateRun) -> str:
        eid = await lookup.experiment_id(self.cache, ws, cmd.experiment_name)
        if cmd.parent_run_id is not None:
            await lookup.run_state(self.cache, ws, cmd.parent_run_id)
        return eid

    # -- queries --------------------------------------------------------------------------

    async def _list_members(self, req: Request) -> QueryResult:
        """From the log (fresh), not a read model: a handful of events per workspace."""
        state = await lookup.state(
            self.cache, workspace.AGGREGATE, req.workspace, req.workspace, fresh=True
        )
        if not state.exists:
            raise NotFound(f"workspace {req.workspace} does not exist")
        history = self.cache.get(subjects.event(req.workspace, workspace.KIND, req.workspace))
        seq = history[-1].seq if history else 0
        members = [{"user": u, "roles": list(r)} for u, r in sorted(state.members.items())]
        return QueryResult(seq=seq, data=members)

    async def _list_workspaces(self, req: Request) -> QueryResult:
        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT name, description, created_at, created_by, default_datastore"
                f" FROM {t('workspaces')} ORDER BY name"
            )
            keys = ("name", "description", "created_at", "created_by", "default_datastore")
            return [dict(zip(keys, row, strict=True)) for row in rows]

        result = await self.read(req, fn)
        gate = gate_of(self.conn)
        if req.actor in (SERVICE_ACTOR, ADMIN_ACTOR) or not isinstance(gate, Membership):
            return result
        mine = {
            ws: sorted(people[req.actor])
            for ws, people in gate.members.items()
            if req.actor in people
        }
        data = [{**row, "roles": mine[row["name"]]} for row in result.data if row["name"] in mine]
        return QueryResult(seq=result.seq, data=data)

    async def _list_experiments(self, req: Request) -> QueryResult:
        q: ListExperiments = req.body
        return await self._experiments(req, q.archived, None)

    async def _get_experiment(self, req: Request) -> QueryResult:
        q: GetExperiment = req.body
        found = await self._experiments(req, "all", q.name)
        if not found.data:
            raise NotFound(f"experiment {q.name!r} does not exist" + q.then())
        return QueryResult(seq=found.seq, data=found.data[0])

    async def _experiments(self, req: Request, archived: str, name: str | None) -> QueryResult:
        """The experiments (``archived``: "no", "only", "all"; ``name``: that one alone) with
        their run counts, now or as of the query's moment (the workspace's events then)."""
        where = {"no": " AND e.archived = 0", "only": " AND e.archived = 1", "all": ""}[archived]
        args: tuple[str, ...] = (req.workspace,)
        if name is not None:
            where, args = where + " AND e.experiment_id = ?", (*args, subjects.name_to_id(name))

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT e.experiment_id, e.name, e.created_at, e.created_by, e.archived,"
                f" COUNT(r.run_id) FROM {t('experiments')} e LEFT JOIN {t('runs')} r"
                " ON r.workspace = e.workspace AND r.experiment_id = e.experiment_id"
                f" WHERE e.workspace = ?{where}"
                " GROUP BY e.experiment_id ORDER BY e.name",
                args,
            )
            keys = ("experiment_id", "name", "created_at", "created_by", "archived", "runs")
            found = [dict(zip(keys, row, strict=True)) for row in rows]
            return [{**row, "archived": bool(row["archived"])} for row in found]

        return await self.read_at(req, fn, subjects.events_of_workspace(req.workspace))

    async def _list_runs(self, req: Request) -> QueryResult:
        """One page of runs (``_runs_query``). ``min_seq`` waits for the runs' read model
        (EVENTS), ``metrics_min_seq`` for the metric summaries (METRICS); the reply's ``seq``
        is the former's position, ``metrics_seq`` in its data the latter's. As of a moment,
        the runs as the workspace's events then made them, without metrics (another stream)."""
        q: ListRuns = req.body
        if q.as_of_seq is not None or q.as_of_time is not None:
            if q.metrics or compile_query(q).metrics:
                raise InvalidInput(
                    "a runs query as of a moment cannot filter, order or show metrics"
                    " (they are another stream's): ask run.get / metrics.get as of it per run"
                )
            return await self.read_at(
                req,
                lambda db, t: _page(list_runs(db, t, "", req.workspace, q, count=q.count), 0),
                subjects.events_of_workspace(req.workspace),
            )
        wait_s = min(max(q.wait_s, 0.0), 30.0)
        if self.run_metrics.last_seq < q.metrics_min_seq:
            async with slot_lent():
                await self.run_metrics.wait_for(q.metrics_min_seq, timeout=wait_s)

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any]:
            # no await from the wait to here: the metrics' generation cannot swap under us
            metrics_table = self.run_metrics.tables("metrics")
            metrics_seq = self.run_metrics.last_seq
            page = list_runs(db, t, metrics_table, req.workspace, q, count=q.count)
            return _page(page, metrics_seq)

        return await self.read(req, fn)

    async def _get_run(self, req: Request) -> QueryResult:
        q: GetRun = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT * FROM {t('runs')} WHERE workspace = ? AND run_id = ?",
                (req.workspace, q.run_id),
            ).fetchone()
            return _run_row(row) if row else None

        result = await self._read_run(req, q.run_id, fn)
        if result.data is None:
            raise NotFound(f"run {q.run_id} does not exist" + q.then())
        return result

    async def _read_run(
        self, req: Request, run_id: str, fn: Callable[[sqlite3.Connection, Tables], Any]
    ) -> QueryResult:
        """``fn`` on the live read model, or, for a query with ``as_of_seq``/``as_of_time``,
        on one of the run's events up to then, from the log."""
        q = req.body
        result = await self.read_at(req, fn, subjects.event(req.workspace, run.KIND, run_id))
        if q.then() and not result.seq:
            raise NotFound(f"run {run_id} did not exist" + q.then())
        return result

    async def _history(self, req: Request) -> QueryResult:
        """An entity's events from the log, a page at a time (``cairn history``)."""
        q: GetHistory = req.body
        ws = req.workspace
        if q.entity_kind == "workspace":
            if q.name != ws:
                raise InvalidInput(f"a workspace's history is its own: name {ws!r}, not {q.name!r}")
            entity_id = ws
        elif q.entity_kind == "run":
            entity_id = validate_token(q.name, "run id")
        elif q.entity_kind == "experiment":
            entity_id = await lookup.experiment_id(self.cache, ws, q.name)
        else:
            entity_id = subjects.name_to_id(q.name)
        subject = subjects.event(ws, q.entity_kind, entity_id)
        events = await self.store.read(subject, after_seq=q.after_seq)
        if not events and q.after_seq == 0:
            raise NotFound(f"no {q.entity_kind} called {q.name!r} has any event")
        page = events[: q.limit]
        rows = [
            {
                "seq": r.seq,
                "time": r.envelope.timestamp.isoformat(),
                "event": r.envelope.type,
                "actor": r.envelope.actor,
                "command_id": r.envelope.causation_id,
                "correlation_id": r.envelope.correlation_id,
                "data": redact(msgspec.to_builtins(r.envelope.data)),
            }
            for r in page
        ]
        more = len(events) > q.limit
        last = events[-1].seq if events else q.after_seq
        return QueryResult(
            seq=last,
            data={"events": rows, "next_after": page[-1].seq if more else None},
        )

    async def _list_files(self, req: Request) -> QueryResult:
        q: ListRunFiles = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT path, digest, size, created_at, created_by FROM {t('files')}"
                " WHERE workspace = ? AND run_id = ? AND substr(path, 1, ?) = ? ORDER BY path",
                (req.workspace, q.run_id, len(q.prefix), q.prefix),
            )
            return [dict(zip(_FILE_COLUMNS, row, strict=True)) for row in rows]

        return await self._read_run(req, q.run_id, fn)

    async def _get_file(self, req: Request) -> QueryResult:
        q: GetRunFile = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT path, digest, size, created_at, created_by FROM {t('files')}"
                " WHERE workspace = ? AND run_id = ? AND path = ?",
                (req.workspace, q.run_id, q.path),
            ).fetchone()
            return dict(zip(_FILE_COLUMNS, row, strict=True)) if row else None

        result = await self._read_run(req, q.run_id, fn)
        if result.data is None:
            raise NotFound(f"run {q.run_id} has no file {q.path!r}" + q.then())
        return result


def _page(page: RunsPage, metrics_seq: int) -> dict[str, Any]:
    return {
        "runs": page.runs,
        "next_cursor": page.next_cursor,
        "remaining": page.remaining,
        "metrics_seq": metrics_seq,
    }
