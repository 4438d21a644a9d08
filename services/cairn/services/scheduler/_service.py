"""The scheduler: a process manager that follows EVENTS and leases jobs to agents.

It answers the job commands (submit, claim, report, finish) and, in a loop, turns what the log
says into the next decision: publish a ticket for each queued run (highest priority first,
at most ``job_ticket_window`` unclaimed tickets per compute target, the next ones released as
tickets are claimed), take back runs whose agent stopped
reporting (``RunRequeued`` or, past the attempt budget, ``RunFailed``), ask for runs past
their timeout to be stopped, and fail runs whose ticket JetStream gave up delivering (the
MAX_DELIVERIES advisory), deleting that ticket.

Every decision goes through the run aggregate with a command id derived from what caused it
(``derived_id("lost", ws, run, attempt)``), so a repeated decision is a no-op and a stale view of
the read model can never move a run wrongly. Lease renewals live in a KV bucket that every
replica mirrors, and an expiry is a compare-and-set on the run's key that a renewal makes fail
(see ``_leases``), so several replicas can share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import CommandContext, Connection, ensure_consumer, execute, replayed
from cairn.domain import run as runs
from cairn.domain import schedule as schedules
from cairn.errors import CairnError, InvalidInput, NotFound, PermissionDenied, StaleAttempt
from cairn.log import get_logger
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.jobs import (
    JOB_COMMAND_TYPES,
    Assignment,
    ClaimJob,
    DatasetRuns,
    FinishJob,
    GetJob,
    JobStatus,
    ListJobs,
    ReportJob,
    SubmitJob,
    Ticket,
    derived_id,
)
from cairn.proto.streams import JOBS, job_consumer
from cairn.rpc import SERVICE_ACTOR, Request, Responder
from cairn.service import ProjectedService, reconcile_every
from cairn.services.scheduler._autoscale import Autoscaler
from cairn.services.scheduler._endpoints import Endpoints
from cairn.services.scheduler._leases import Leases
from cairn.services.scheduler._projection import ACTIVE, JOB_COLUMNS, JobsProjection
from cairn.services.scheduler._pythons import Pythons
from cairn.services.scheduler._resolve import EXISTS_FOR_S, resolve_asset, resolve_job
from cairn.settings import Settings
from cairn.telemetry import SCHEDULER_QUEUED, SCHEDULER_RUNNING, forget

__all__ = ["SchedulerService"]

log = get_logger("cairn.scheduler")
_encoder = msgspec.json.Encoder()
MAX_DELIVERIES = subjects.max_deliveries_advisory(JOBS.name)


def _job_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(JOB_COLUMNS, row, strict=True))


class SchedulerService(ProjectedService):
    name = "scheduler"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings, JobsProjection())
        self.settings = settings
        self.window = max(1, settings.job_ticket_window)
        self.tick_s = min(0.5, settings.job_lease_s / 4)
        self.leases = Leases(conn, settings.job_lease_s)
        self.pythons = Pythons(conn, downloads=settings.python_downloads)
        self.published: dict[tuple[str, str, int], str] = {}  # ticket -> compute
        self.claimed: set[tuple[str, str, int]] = set()  # claimed, maybe not yet projected
        self.consumers: set[tuple[str, str]] = set()
        self.computes: set[str] = set()  # the compute targets the job gauges have shown
        self._advisories: Any = None
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter("job")],
                queue="scheduler",
                types=JOB_COMMAND_TYPES,
                routes={
                    SubmitJob.VERB: self._submit,
                    ClaimJob.VERB: self._claim,
                    ReportJob.VERB: self._report,
                    FinishJob.VERB: self._finish,
                },
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("job")],
                queue="scheduler",
                types=(ListJobs, GetJob, DatasetRuns),
                routes={
                    ListJobs.NAME: self._list,
                    GetJob.NAME: self._get,
                    DatasetRuns.NAME: self._dataset_runs,
                },
            ),
        ]
        self.endpoints = Endpoints(conn, settings, self.cache, self.pythons, self._publish)
        self.responders += self.endpoints.responders
        self.autoscaler = Autoscaler(
            conn, self.cache, self.endpoints.submit_replica, self.endpoints.cancel_replica
        )
        self.endpoints.load = self.autoscaler.load

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.leases.start()
        await super().start()
        self._advisories = await self.conn.nc.subscribe(MAX_DELIVERIES, cb=self._on_max_deliveries)

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):  # decide on a caught-up view where possible
            await self.projection.wait_for(await self.store.last_seq(), timeout=30)
        loop = asyncio.create_task(self._loop(stop))
        try:
            await super().run(stop)
        finally:
            await loop
            for compute in self.computes:
                forget(SCHEDULER_QUEUED, compute)
                forget(SCHEDULER_RUNNING, compute)
            await self.leases.stop()
            await self.autoscaler.close()
            with contextlib.suppress(Exception):
                await self._advisories.unsubscribe()

    async def _loop(self, stop: asyncio.Event) -> None:
        await reconcile_every(stop, self.tick_s, self.reconcile, "reconcile_failed")

    # -- decisions -----------------------------------------------------------------------

    async def _decide(
        self, ws: str, run_id: str, command_id: str, command: runs.RunCommand
    ) -> Accepted:
        """A decision of the scheduler's own, under an id derived from the fact it follows."""
        ctx = CommandContext(workspace=ws, command_id=command_id, actor="cairn-scheduler")
        return await execute(ctx, runs.AGGREGATE, run_id, command, cache=self.cache)

    async def reconcile(self) -> None:
        """One pass over the active jobs: tickets, leases, timeouts. None while this replica
        is cut off from the bus: what it would send is buffered and sent once the connection
        is back, decided on what it saw before (``Leases.away``; the client's callbacks stamp
        an outage too short for a pass to see)."""
        if not self.conn.nc.is_connected:
            self.leases.away()
            return

        def active(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            marks = ",".join("?" * len(ACTIVE))
            rows = db.execute(
                f"SELECT * FROM {t('jobs')} WHERE status IN ({marks}) ORDER BY priority DESC, seq",
                ACTIVE,
            )
            return [_job_row(row) for row in rows]

        jobs, _ = self.projection.read(active)
        self.count_jobs(jobs)
        await self._forget_ended({(j["workspace"], j["run_id"]) for j in jobs})
        now = time.time()
        queued = {
            (j["workspace"], j["run_id"], j["queue_n"])
            for j in jobs
            if j["status"] == runs.RunStatus.QUEUED
        }
        self.published = {k: c for k, c in self.published.items() if k in queued}
        self.claimed &= queued
        for job in jobs:
            if job["status"] == runs.RunStatus.QUEUED:
                if job["not_before"] <= now:
                    ws, run_id = job["workspace"], job["run_id"]
                    await self._publish(ws, run_id, job["queue_n"], job["compute"])
                continue
            await self._check_lease(job)
            timeout = job["timeout_s"]
            started = job["started_at"]
            if timeout and started and job["status"] == runs.RunStatus.RUNNING:
                if now > started + timeout:
                    await self._time_out(job["workspace"], job["run_id"], job["attempt"], timeout)
        try:
            await self.endpoints.converge([(j["workspace"], j["run_id"]) for j in jobs])
        except Exception as exc:  # the stream info may be unanswered for a while
            log.warning("deployments_converge_failed", error=repr(exc))
        await self.autoscaler.tick()

    def count_jobs(self, active: list[dict[str, Any]]) -> None:
        """Set the queued and running job gauges from the active jobs, per compute target (a
        target seen before and now idle shows 0)."""
        queued = Counter(j["compute"] for j in active if j["status"] == runs.RunStatus.QUEUED)
        held = Counter(j["compute"] for j in active if j["status"] != runs.RunStatus.QUEUED)
        self.computes |= queued.keys() | held.keys()
        for compute in self.computes:
            SCHEDULER_QUEUED.labels(compute).set(queued[compute])
            SCHEDULER_RUNNING.labels(compute).set(held[compute])

    async def _time_out(self, ws: str, run_id: str, attempt: int, timeout_s: float) -> None:
        command = runs.TimeOutAttempt(run_id=run_id, attempt=attempt, timeout_s=timeout_s)
        await self._decide(ws, run_id, derived_id("timeout", ws, run_id, attempt), command)

    async def _forget_ended(self, active: set[tuple[str, str]]) -> None:
        """Delete the renewals of runs that have ended: the replica that recorded the end
        deletes its run's renewal, but may not have seen one another replica wrote."""
        self.leases.keep(active)
        left = [key for key in self.leases.renewed if key not in active]
        if not left:
            return

        def ended(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str]]:
            sql = f"SELECT status FROM {t('jobs')} WHERE workspace=? AND run_id=?"
            rows = ((key, db.execute(sql, key).fetchone()) for key in left)
            return [key for key, row in rows if row is not None and row[0] not in ACTIVE]

        for ws, run_id in self.projection.read(ended)[0]:
            await self.leases.end(ws, run_id)

    async def _check_lease(self, job: dict[str, Any]) -> None:
        ws, run_id, attempt = job["workspace"], job["run_id"], job["attempt"]
        lease_s, alive_at = job["lease_s"], job["alive_at"] or 0.0
        if not self.leases.expired(ws, run_id, attempt, lease_s, alive_at):
            return
        lease = await self.leases.read(ws, run_id, attempt, lease_s, alive_at)
        if lease is None:
            return
        reason = f"lease expired: agent {job['agent_id']} silent for {job['lease_s']:g} s"
        stable = await self.endpoints.stable(ws, run_id, attempt, job["started_at"])
        command = runs.LoseAttempt(run_id=run_id, attempt=attempt, reason=reason, stable=stable)

        async def lose() -> Accepted:
            log.info("lease_expired", run_id=run_id, attempt=attempt, agent=job["agent_id"])
            return await self._decide(ws, run_id, derived_id("lost", ws, run_id, attempt), command)

        await self.leases.expire(lease, lose)

    async def _release(self, ws: str, compute: str) -> None:
        """A ticket was claimed: hand out the next ones (highest priority first)."""

        def queued(db: sqlite3.Connection, t: Tables) -> list[tuple[str, int]]:
            rows = db.execute(
                f"SELECT run_id, queue_n FROM {t('jobs')} WHERE workspace=? AND compute=?"
                " AND status=? AND not_before<=? ORDER BY priority DESC, seq LIMIT ?",
                (ws, compute, runs.RunStatus.QUEUED.value, time.time(), self.window * 4),
            )
            return [(str(r), int(n)) for r, n in rows]

        for run_id, queue_n in self.projection.read(queued)[0]:
            if not await self._publish(ws, run_id, queue_n, compute):
                return

    async def _publish(self, ws: str, run_id: str, queue_n: int, compute: str) -> bool:
        """Publish the run's ticket unless it is out already; False when the workspace's queue
        on the compute target has ``window`` unclaimed tickets (the run waits, and priority can
        still reorder it)."""
        key = (ws, run_id, queue_n)
        if key in self.published or key in self.claimed:
            return True
        out = sum(1 for (w, _, _), c in self.published.items() if w == ws and c == compute)
        if out >= self.window:  # per workspace: each has its own queue (consumer) per target
            return False
        if (ws, compute) not in self.consumers:
            config = job_consumer(
                ws,
                compute,
                ack_wait_s=self.settings.job_lease_s,
                max_deliver=self.settings.job_max_deliver,
            )
            await ensure_consumer(self.conn, JOBS.name, config)
            self.consumers.add((ws, compute))
        ticket = Ticket(workspace=ws, run_id=run_id, queue_n=queue_n)
        await self.conn.js.publish(
            subjects.job(ws, compute),
            _encoder.encode(ticket),
            headers={"Nats-Msg-Id": f"ticket:{ws}:{run_id}:{queue_n}"},
        )
        self.published[key] = compute
        return True

    async def _on_max_deliveries(self, msg: Any) -> None:
        """JetStream stopped delivering a ticket: fail its run (if the ticket is still the
        run's current one) and delete the ticket, which a work queue would otherwise keep."""
        try:
            advisory = json.loads(msg.data)
            seq, deliveries = int(advisory["stream_seq"]), int(advisory.get("deliveries", 0))
            stored = await self.conn.js.get_msg(JOBS.name, seq)
            ticket = msgspec.json.decode(stored.data or b"", type=Ticket)
            run_id, queue_n = ticket.run_id, ticket.queue_n
            command = runs.FailUndeliverable(run_id=run_id, queue_n=queue_n, deliveries=deliveries)
            command_id = derived_id("undeliverable", ticket.workspace, run_id, queue_n)
            await self._decide(ticket.workspace, run_id, command_id, command)
            await self.conn.js.delete_msg(JOBS.name, seq)
            log.warning("ticket_undeliverable", run_id=ticket.run_id, deliveries=deliveries)
        except Exception as exc:  # already gone, or not a ticket: nothing to fail
            log.warning("max_deliveries_unhandled", error=repr(exc))

    # -- commands ------------------------------------------------------------------------

    async def _on_run(
        self, req: Request, run_id: str, command: runs.RunCommand, *, new: bool = False
    ) -> Accepted:
        """Decide a request's command on the run it names (``new``: a run the command creates,
        with an id the client just made)."""
        return await execute(
            req.context(), runs.AGGREGATE, run_id, command, cache=self.cache, new=new
        )

    async def _submit(self, req: Request) -> Accepted:
        cmd: SubmitJob = req.body
        ws = req.workspace
        if cmd.job.serve is not None:  # a replica is the deployment's, never a person's job
            raise InvalidInput("job.serve is set by endpoint.deploy alone: deploy a model")
        await lookup.require_workspace(self.cache, ws)
        if cmd.scheduled is not None:  # who may claim a fire: before anything else
            await self._check_fired(req, cmd)
        try:
            submit = await self._resolve_submit(ws, cmd)
        except CairnError:
            # a copy sent again after its first was accepted (its reply lost) is answered as
            # the replay it is, even when what it names has changed or gone since
            done = await replayed(req.context(), runs.KIND, cmd.run_id, self.cache)
            if done is None:
                raise
            return done
        accepted = await self._on_run(req, cmd.run_id, submit, new=True)
        if not accepted.replayed:  # the fast path; the reconcile loop is the safety net
            with contextlib.suppress(Exception):
                await self._publish(ws, cmd.run_id, 1, cmd.compute)
        return accepted

    async def _resolve_submit(self, ws: str, cmd: SubmitJob) -> runs.SubmitResolvedJob:
        """The submission with what it names resolved: refused when anything is missing."""
        experiment_id = await lookup.experiment_id(self.cache, ws, cmd.experiment_name)
        if cmd.parent_run_id is not None:  # a pipeline's step, a sweep's trial
            parent = await lookup.run_state(self.cache, ws, cmd.parent_run_id)
            if parent.experiment_id != experiment_id:
                raise InvalidInput(
                    f"parent run {cmd.parent_run_id} is in experiment {parent.experiment_name!r},"
                    f" not {cmd.experiment_name!r}"
                )
        compute = cmd.compute
        await resolve_asset(
            self.cache, self.settings, ws, "compute", compute, None, max_age_s=EXISTS_FOR_S
        )
        job = await resolve_job(self.cache, self.settings, ws, cmd, self.pythons)
        return runs.SubmitResolvedJob(command=cmd, experiment_id=experiment_id, job=job)

    async def _check_fired(self, req: Request, cmd: SubmitJob) -> None:
        """A run that says a schedule fired it is accepted only from the services (the
        schedules service sends it; a person who read the fire's run id cannot claim it), and
        only if the schedule's log records that fire with this run id (read fresh: the fire
        was appended just before)."""
        scheduled = cmd.scheduled
        assert scheduled is not None
        if req.actor != SERVICE_ACTOR:
            raise PermissionDenied(
                f"only the schedules service submits a run as a fire of schedule"
                f" {scheduled.schedule!r}"
            )
        ws = req.workspace
        sid = subjects.name_to_id(scheduled.schedule)
        state = await lookup.state(self.cache, schedules.AGGREGATE, ws, sid, fresh=True)
        if (scheduled.due, cmd.run_id) not in state.recent:
            raise PermissionDenied(
                f"schedule {scheduled.schedule!r} has no recent fire with run {cmd.run_id}"
            )

    async def _claim(self, req: Request) -> QueryResult:
        cmd: ClaimJob = req.body
        assign = runs.AssignJob(command=cmd, lease_s=self.settings.job_lease_s)
        accepted = await self._on_run(req, cmd.run_id, assign)
        # the cache holds what this claim appended; a replayed claim may be behind the log
        fresh = accepted.replayed
        state = await lookup.run_state(self.cache, req.workspace, cmd.run_id, fresh=fresh)
        if state.agent_id != cmd.agent_id or state.queue_n != cmd.queue_n or state.job is None:
            raise StaleAttempt(f"run {cmd.run_id} moved on before this claim was answered")
        key = (req.workspace, cmd.run_id, cmd.queue_n)
        self.claimed.add(key)
        if self.published.pop(key, None) is not None:
            with contextlib.suppress(Exception):  # the reconcile loop retries
                await self._release(req.workspace, state.compute)
        assignment = Assignment(
            run_id=state.run_id,
            attempt=state.attempt,
            experiment_name=state.experiment_name,
            job=state.job,
            lease_s=state.lease_s,
        )
        return QueryResult(seq=accepted.seq, data=assignment)

    async def _report(self, req: Request) -> QueryResult:
        cmd: ReportJob = req.body
        accepted = await self._on_run(req, cmd.run_id, cmd)
        state = await lookup.run_state(self.cache, req.workspace, cmd.run_id)
        if cmd.phase == "progress":  # a start is in the log, and renews the lease from there
            # refused (StaleAttempt) once an expiry took the lease back: the agent stops
            await self.leases.renew(req.workspace, cmd.run_id, cmd.attempt)
        cancel = state.status == runs.RunStatus.CANCEL_REQUESTED
        status = JobStatus(
            run_id=cmd.run_id,
            attempt=cmd.attempt,
            status=state.status.value,
            cancel=cancel,
            reason=state.cancel_reason,
        )
        return QueryResult(seq=accepted.seq, data=status)

    async def _finish(self, req: Request) -> Accepted:
        cmd: FinishJob = req.body
        stable = False
        if cmd.outcome == "lost":  # a replica that served for a while starts its back-off over
            stable = await self.endpoints.stable(
                req.workspace, cmd.run_id, cmd.attempt, self._started_at(req.workspace, cmd.run_id)
            )
        finish = runs.FinishStableJob(command=cmd, stable=stable)
        accepted = await self._on_run(req, cmd.run_id, finish)
        await self.leases.end(req.workspace, cmd.run_id)
        return accepted

    def _started_at(self, ws: str, run_id: str) -> float | None:
        """When the run's current attempt started, as the read model has it."""

        def fn(db: sqlite3.Connection, t: Tables) -> float | None:
            sql = f"SELECT started_at FROM {t('jobs')} WHERE workspace=? AND run_id=?"
            row = db.execute(sql, (ws, run_id)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return self.projection.read(fn)[0]

    # -- queries -------------------------------------------------------------------------

    async def _list(self, req: Request) -> QueryResult:
        q: ListJobs = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            sql = f"SELECT * FROM {t('jobs')} WHERE workspace = ?"
            args: list[Any] = [req.workspace]
            if q.compute is not None:
                sql += " AND compute = ?"
                args.append(q.compute)
            if q.active:
                sql += f" AND status IN ({','.join('?' * len(ACTIVE))})"
                args.extend(ACTIVE)
            sql += " ORDER BY submitted_at DESC, run_id LIMIT ?"
            args.append(max(1, min(q.limit, 10_000)))
            return [_job_row(row) for row in db.execute(sql, args)]

        return await self.read(req, fn)

    async def _get(self, req: Request) -> QueryResult:
        q: GetJob = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            row = db.execute(
                f"SELECT * FROM {t('jobs')} WHERE workspace = ? AND run_id = ?",
                (req.workspace, q.run_id),
            ).fetchone()
            return _job_row(row) if row else None

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"no job {q.run_id}")
        state = await lookup.state(self.cache, runs.AGGREGATE, req.workspace, q.run_id)
        job = state.job
        if job is not None and job.environment is not None:  # what the run ran in
            result.data["environment"] = msgspec.to_builtins(job.environment)
        if state.scheduled is not None:  # the schedule fire that submitted it
            result.data["scheduled"] = msgspec.to_builtins(state.scheduled)
        return result

    async def _dataset_runs(self, req: Request) -> QueryResult:
        q: DatasetRuns = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            sql = (
                f"SELECT i.version, i.run_id, j.status, j.experiment_name FROM {t('inputs')} i"
                f" JOIN {t('jobs')} j ON j.workspace = i.workspace AND j.run_id = i.run_id"
                " WHERE i.workspace = ? AND i.dataset = ?"
            )
            args: list[Any] = [req.workspace, q.dataset]
            if q.version is not None:
                sql += " AND i.version = ?"
                args.append(q.version)
            rows = db.execute(sql + " ORDER BY i.version, j.submitted_at", args)
            keys = ("version", "run_id", "status", "experiment_name")
            return [dict(zip(keys, row, strict=True)) for row in rows]

        return await self.read(req, fn)
