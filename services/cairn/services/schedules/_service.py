"""The schedules service: a process manager that fires schedules.

It answers the schedule commands and queries, projects schedules and their fires into SQLite
(``schedules.sqlite``) and, in a reconcile loop on its clock:

1. for each enabled schedule whose next due time has come, decides ``FireSchedule(now)`` on
   the schedule's aggregate with a command id derived from the schedule and the due time it
   fires for, so replicas deciding together decide once (and the aggregate's cursor makes a
   late replica's decision a no-op);
2. for each fire whose run is not submitted yet, sends the stored submission with the fire's
   run id and a command id derived from it (``SubmitJob`` to the scheduler, which checks the
   fire in the schedule's log); a refusal is recorded as ``ScheduleFireFailed``, a bus that
   is away is tried again on the next pass.

Event triggers are a durable consumer per event kind (``_triggers``). The clock is a
constructor argument so that tests can move time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import CommandContext, Connection, execute
from cairn.domain import asset, workspace
from cairn.domain import schedule as schedules
from cairn.domain.environment import CURATED, parse_reference
from cairn.domain.triggers import MAX_COUNTED, as_utc, check_trigger, dues_after, pending
from cairn.errors import CairnError, ConcurrencyConflict, InvalidInput, NotFound, Unavailable
from cairn.log import get_logger
from cairn.members import roles_allow
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.jobs import JobEnvironment, ScheduledBy, SubmitJob, derived_id
from cairn.proto.pipelines import SubmitPipeline
from cairn.proto.schedules import (
    SCHEDULE_COMMAND_TYPES,
    SCHEDULE_QUERY_TYPES,
    CreateSchedule,
    DeleteSchedule,
    DisableSchedule,
    EnableSchedule,
    GetSchedule,
    ListSchedules,
    Submission,
    UpdateSchedule,
)
from cairn.rpc import ADMIN_ACTOR, SERVICE_ACTOR, Client, Request, Responder
from cairn.service import ProjectedService, reconcile_every
from cairn.services.schedules._pipelines import pin_pipeline
from cairn.services.schedules._projection import (
    FIRE_COLUMNS,
    SchedulesProjection,
    decode_state,
    next_due,
)
from cairn.services.schedules._triggers import EventTriggers
from cairn.settings import Settings

__all__ = ["ACTOR", "SchedulesService"]

log = get_logger("cairn.schedules")
ACTOR = "cairn-schedules"
#: errors after which a fire's submission is tried again on the next pass
_TRANSIENT = (Unavailable, ConcurrencyConflict, TimeoutError, ConnectionError)


class SchedulesService(ProjectedService):
    name = "schedules"

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ) -> None:
        super().__init__(conn, settings, SchedulesProjection())
        self.settings = settings
        self.clock = clock
        self.tick_s = tick_s
        #: runs submitted, maybe not yet projected, by workspace and run id
        self.sent: set[tuple[str, str]] = set()
        self.triggers = EventTriggers(self)
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter("schedule")],
                queue="schedules",
                types=SCHEDULE_COMMAND_TYPES,
                routes={
                    CreateSchedule.VERB: self._create,
                    UpdateSchedule.VERB: self._update,
                    DisableSchedule.VERB: self._disable,
                    EnableSchedule.VERB: self._enable,
                    DeleteSchedule.VERB: self._delete,
                },
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("schedule")],
                queue="schedules",
                types=SCHEDULE_QUERY_TYPES,
                routes={ListSchedules.NAME: self._list, GetSchedule.NAME: self._get},
            ),
        ]

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        await self.triggers.start()

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):  # decide on a caught-up view where possible
            await self.projection.wait_for(await self.store.last_seq(), timeout=30)
        loop = asyncio.create_task(self._loop(stop))
        events = asyncio.create_task(self.triggers.run(stop))
        try:
            await super().run(stop)
        finally:
            await loop
            await events

    async def _loop(self, stop: asyncio.Event) -> None:
        await reconcile_every(stop, self.tick_s, self.reconcile, "schedules_reconcile_failed")

    # -- decisions -----------------------------------------------------------------------

    async def decide(
        self, ws: str, schedule_id: str, command_id: str, command: schedules.ScheduleCommand
    ) -> Accepted:
        """A decision of the service's own, under an id derived from the fact it follows."""
        ctx = CommandContext(workspace=ws, command_id=command_id, actor=ACTOR)
        return await execute(ctx, schedules.AGGREGATE, schedule_id, command, cache=self.cache)

    async def reconcile(self) -> None:
        """One pass: fire what is due, submit what was fired."""
        now = self.clock()

        def due(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str, int, str]]:
            rows = db.execute(
                f"SELECT workspace, schedule_id, incarnation, state FROM {t('schedules')}"
                " WHERE enabled=1 AND next_due IS NOT NULL AND next_due <= ?",
                (now,),
            )
            return [(str(w), str(s), int(n), str(st)) for w, s, n, st in rows]

        for ws, sid, n, raw in self.projection.read(due)[0]:
            try:  # one schedule that cannot fire does not hold up the others
                await self._fire(ws, sid, n, decode_state(raw), now)
            except Exception as exc:
                log.warning("schedule_fire_failed", workspace=ws, schedule=sid, error=repr(exc))
        await self.submit_fired()

    async def _fire(
        self, ws: str, sid: str, n: int, state: schedules.ScheduleState, now: float
    ) -> None:
        if state.trigger is None:
            return
        # the decision's id is derived from the due time it fires for (the last one due)
        last = pending(state.trigger, state.after, now, state.created_at).last
        command_id = derived_id("fire", ws, sid, n, repr(last))
        fire = schedules.FireSchedule(workspace=ws, schedule_id=sid, now=now)
        await self.decide(ws, sid, command_id, fire)

    async def submit_fired(self) -> None:
        """Send the submission of every fire whose run is not submitted yet."""

        def fired(db: sqlite3.Connection, t: Tables) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT f.workspace, f.schedule_id, f.due, f.run_id, f.event_seq, s.state,"
                f" s.created_by FROM {t('fires')} f JOIN {t('schedules')} s"
                " ON s.workspace = f.workspace AND s.schedule_id = f.schedule_id"
                " AND s.incarnation = f.incarnation"
                " WHERE f.state = 'fired'"
            ).fetchall()

        rows = self.projection.read(fired)[0]
        self.sent &= {(row[0], row[3]) for row in rows}  # forget those shown settled
        for ws, sid, due, run_id, event_seq, raw, creator in rows:
            if (ws, run_id) in self.sent:
                continue
            state = decode_state(raw)
            if state.submission is None:
                continue
            scheduled = ScheduledBy(schedule=state.name, due=due, event_seq=event_seq)
            try:  # one fire that cannot be sent does not hold up the others
                await self.submit_one(ws, sid, state.submission, run_id, scheduled, creator)
            except Exception as exc:
                log.warning("schedule_submit_failed", run_id=run_id, error=repr(exc))

    async def _refusal(self, ws: str, creator: str) -> str | None:
        """Why the schedule's creator may no longer have it submit jobs (None: they may): a
        schedule acts for the person who made it, so it stops when they leave the workspace
        or lose the roles that submit jobs (a schedule made by a service or the admin does
        not)."""
        if creator in (SERVICE_ACTOR, ADMIN_ACTOR):
            return None
        state = await lookup.state(self.cache, workspace.AGGREGATE, ws, ws, fresh=True)
        if not state.governed:
            return None
        roles = state.members.get(creator)
        if roles is None:
            return f"{creator}, who created the schedule, is no longer a member of {ws}"
        if not roles_allow(frozenset(roles), SubmitJob.VERB, query=False):
            return f"{creator}'s roles in {ws} no longer allow {SubmitJob.VERB}"
        return None

    async def submit_one(
        self,
        ws: str,
        sid: str,
        submission: Submission,
        run_id: str,
        scheduled: ScheduledBy,
        creator: str,
    ) -> None:
        refused = await self._refusal(ws, creator)
        if refused is not None:
            await self._failed(ws, sid, run_id, scheduled, refused)
            return
        command = msgspec.structs.replace(
            submission,
            command_id=derived_id("submit", ws, run_id),
            run_id=run_id,
            scheduled=scheduled,
        )
        try:
            await Client(self.conn, ws).send(command)
        except _TRANSIENT as exc:
            log.warning("schedule_submit_retry", run_id=run_id, error=repr(exc))
            return
        except CairnError as exc:  # refused for what it says: recorded, not tried again
            await self._failed(ws, sid, run_id, scheduled, str(exc))
            return
        self.sent.add((ws, run_id))
        log.info("schedule_submitted", schedule=scheduled.schedule, run_id=run_id)

    async def _failed(
        self, ws: str, sid: str, run_id: str, scheduled: ScheduledBy, error: str
    ) -> None:
        log.warning("schedule_submit_refused", run_id=run_id, error=error)
        failed = schedules.RecordFireFailed(due=scheduled.due, run_id=run_id, error=error)
        try:
            await self.decide(ws, sid, derived_id("firefail", ws, run_id), failed)
        except (InvalidInput, NotFound) as exc:  # the schedule was deleted meanwhile
            log.info("schedule_fire_dropped", run_id=run_id, reason=str(exc))
        self.sent.add((ws, run_id))

    # -- commands ------------------------------------------------------------------------

    async def _pin(self, ws: str, submission: Submission) -> Submission:
        """The submission with its environment resolved now (a registered name becomes that
        version's spec), and its experiment checked."""
        if isinstance(submission, SubmitPipeline):  # each step's, in ._pipelines
            return await pin_pipeline(self.cache, self.settings, ws, submission)
        await lookup.experiment_id(self.cache, ws, submission.experiment_name)
        ref = submission.environment_name
        if ref is None:
            return submission
        name, version = parse_reference(ref)
        if name == ref or name not in CURATED:
            version = submission.environment_version if version is None else version
        kind = "environment"
        state = await lookup.state(
            self.cache, asset.aggregate(kind), ws, subjects.name_to_id(name), fresh=True
        )
        builtin = asset.builtin_assets(self.settings.home_path, ws, kind).get(name)
        ev = asset.resolve(state, builtin, kind, name, version)
        assert isinstance(ev.spec, EnvironmentSpec)
        env = JobEnvironment(name=name, version=ev.version, spec=ev.spec, spec_hash=ev.spec_hash)
        job = msgspec.structs.replace(submission.job, environment=env)
        return msgspec.structs.replace(
            submission, job=job, environment_name=None, environment_version=None
        )

    async def _on_schedule(
        self, req: Request, name: str, command: schedules.ScheduleCommand
    ) -> Accepted:
        sid = subjects.name_to_id(name)
        return await execute(req.context(), schedules.AGGREGATE, sid, command, cache=self.cache)

    async def _create(self, req: Request) -> Accepted:
        cmd: CreateSchedule = req.body
        await lookup.require_workspace(self.cache, req.workspace)
        check_trigger(cmd.trigger)  # before any lookup: a bad trigger names its key
        pinned = await self._pin(req.workspace, cmd.submission)
        command = msgspec.structs.replace(cmd, submission=pinned)
        # events up to the stream's last sequence now are older than the schedule
        seq = await self.store.last_seq()
        at = schedules.CreateScheduleAt(command=command, now=self.clock(), events_seq=seq)
        return await self._on_schedule(req, cmd.name, at)

    async def _update(self, req: Request) -> Accepted:
        cmd: UpdateSchedule = req.body
        if cmd.submission is not None:
            cmd = msgspec.structs.replace(
                cmd, submission=await self._pin(req.workspace, cmd.submission)
            )
        at = schedules.UpdateScheduleAt(command=cmd, now=self.clock())
        return await self._on_schedule(req, cmd.name, at)

    async def _disable(self, req: Request) -> Accepted:
        cmd: DisableSchedule = req.body
        at = schedules.DisableScheduleAt(command=cmd, now=self.clock())
        return await self._on_schedule(req, cmd.name, at)

    async def _enable(self, req: Request) -> Accepted:
        cmd: EnableSchedule = req.body
        at = schedules.EnableScheduleAt(command=cmd, now=self.clock())
        return await self._on_schedule(req, cmd.name, at)

    async def _delete(self, req: Request) -> Accepted:
        cmd: DeleteSchedule = req.body
        at = schedules.DeleteScheduleAt(command=cmd, now=self.clock())
        return await self._on_schedule(req, cmd.name, at)

    # -- queries -------------------------------------------------------------------------

    def _summary(self, state: schedules.ScheduleState, created_by: str) -> dict[str, Any]:
        trigger = state.trigger
        upcoming = next_due(state)
        return {
            "name": state.name,
            "display_name": state.display_name,
            "description": state.description,
            "tags": state.tags,
            "enabled": state.enabled,
            "catch_up": state.catch_up,
            "trigger": msgspec.to_builtins(trigger),
            "created_at": as_utc(state.created_at),
            "created_by": created_by,
            "next_due": None if upcoming is None or not state.enabled else as_utc(upcoming),
        }

    async def _list(self, req: Request) -> QueryResult:
        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT state, created_by FROM {t('schedules')} WHERE workspace=?"
                " AND name != '' ORDER BY name",
                (req.workspace,),
            )
            return [self._summary(decode_state(raw), by) for raw, by in rows]

        return await self.read(req, fn)

    async def _get(self, req: Request) -> QueryResult:
        q: GetSchedule = req.body
        sid = subjects.name_to_id(q.name)

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT state, created_by FROM {t('schedules')} WHERE workspace=?"
                " AND schedule_id=? AND name != ''",
                (req.workspace, sid),
            ).fetchone()
            if row is None:
                return None
            state = decode_state(row[0])
            fires = db.execute(
                f"SELECT * FROM {t('fires')} WHERE workspace=? AND schedule_id=?"
                " AND incarnation=? ORDER BY at DESC, due DESC LIMIT ?",
                (req.workspace, sid, state.incarnation, q.fire_count),
            )
            shown = self._summary(state, row[1])
            shown["fires"] = [_fire_row(dict(zip(FIRE_COLUMNS, f, strict=True))) for f in fires]
            assert state.trigger is not None
            dues = dues_after(state.trigger, state.after, state.created_at)
            upcoming = [as_utc(d) for _, d in zip(range(q.next_count), dues, strict=False)]
            shown["next_dues"] = upcoming if state.enabled else []
            shown["submission"] = msgspec.to_builtins(state.submission)
            return shown

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"no schedule {q.name!r}")
        return result


def _fire_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "due": as_utc(row["due"]),
        "at": as_utc(row["at"]),
        "state": row["state"],
        "run_id": row["run_id"],
        "run_status": row["run_status"],
        "covers": row["covers"],
        # a catch-up counts at most MAX_COUNTED due times: there may have been more
        "covers_at_least": (row["covers"] or 0) >= MAX_COUNTED,
        "event_seq": row["event_seq"],
        "error": row["error"],
    }
