"""The pipelines service: it takes ``SubmitPipeline`` and orchestrates the steps.

It is a process manager like the scheduler: a projection of EVENTS into its own SQLite read
model (:mod:`._projection`) plus a reconcile loop. A pass starts as soon as the read model
applies an event the loop acts on (a pipeline submitted, a step that did not complete, the
end of a run it watches), and at the latest after ``tick_s``. Each pass looks at the
pipelines whose events (or whose runs' ends) moved since it last looked, plus all active
ones every few seconds, reads the
pipeline's aggregate and decides, through ``cairn.bus.execute``, under a command id derived
from what the decision follows. The steps a pass starts together (a wave: every step whose
upstream steps have completed), and the steps it follows, are taken concurrently, at most
``_CONCURRENT`` at a time (reuse keys, job submissions, a reused step's child run), and
their decisions on the pipeline aggregate, which takes one writer at a time, are one append
per wave (``DecideSteps``, which also records the ends the wave waited for) and one for the
ends found when no wave follows (``EndSteps``): the events of one command per step, each
step decided as alone. A submission starts a pass over its pipeline at once, so a fully
reused pipeline is decided, wave after wave, in that one pass.

======================  ==========================================  ==========================
decision                command (aggregate)                          id
======================  ==========================================  ==========================
create the run          ``CreateRun`` + ``StartRun`` (run)           ``pl-run``/``pl-start``
start a step            ``StartStep`` (pipeline)                     ``pl-step`` (pipeline, step)
start a wave            ``DecideSteps`` (pipeline), with the ends    ``pl-steps`` (pipeline,
                        it waited for                                steps, ``pl-end:`` ends)
submit its job          ``SubmitJob`` to the scheduler               ``pl-submit`` (step run)
reuse an earlier run    ``ReuseStep`` (pipeline), then its child     ``pl-reuse`` (pipeline,
                        run created and completed (run)              step)
record a step's end     ``EndStep`` (pipeline)                       ``pl-end`` (pipeline, step)
record several ends     ``EndSteps`` (pipeline)                      ``pl-ends`` (pipeline, steps)
stop a step             ``CancelRun`` (the step's run)               ``pl-cancel`` (step run)
end the pipeline        ``CompleteRun``/``FailRun`` (run), then      ``pl-done`` (pipeline)
                        ``EndPipeline`` (pipeline)
======================  ==========================================  ==========================

A step's run id is derived from the pipeline run and the step's name, and the aggregate
takes one start or reuse per step, so an orchestrator killed at any point and started again,
or two of them, start no step twice and lose none: a decision found in the log is followed
through (a started step whose job is not submitted yet is submitted, under the same id).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, execute, replayed
from cairn.domain import pipeline as pipelines
from cairn.domain import run as runs
from cairn.domain.pipeline import PipelineState, StepState
from cairn.errors import (
    REFUSALS,
    AlreadyExists,
    CairnError,
    InvalidBinding,
    InvalidTransition,
    NotFound,
)
from cairn.log import get_logger
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.batch import BATCH_COMMAND_TYPES, BATCH_QUERY_TYPES
from cairn.proto.commands import (
    Accepted,
    AddRunProperties,
    CancelRun,
    CompleteRun,
    CreateRun,
    FailRun,
    QueryResult,
    SetRunTags,
    StartRun,
)
from cairn.proto.events import PipelineStepReused, PipelineSubmitted
from cairn.proto.jobs import JobInput, SubmitJob, derived_id
from cairn.proto.parallel import PARALLEL_COMMAND_TYPES, PARALLEL_QUERY_TYPES
from cairn.proto.pipelines import (
    PIPELINE_COMMAND_TYPES,
    PIPELINE_QUERY_TYPES,
    GetPipeline,
    PipelineStep,
    SubmitPipeline,
)
from cairn.rpc import Client, Request, Responder
from cairn.service import ProjectedService, reconcile_every
from cairn.services.pipelines._batch import BatchEndpoints
from cairn.services.pipelines._parallel import ParallelRuns
from cairn.services.pipelines._projection import PipelinesProjection, read_pipeline
from cairn.services.pipelines._published import PublishedPipelines
from cairn.services.pipelines._reuse import reuse_key, upstream_fingerprint
from cairn.services.scheduler._pythons import Pythons
from cairn.services.scheduler._resolve import EXISTS_FOR_S, resolve_asset, resolve_job
from cairn.settings import Settings

__all__ = ["PipelinesService"]

log = get_logger("cairn.pipelines")
ACTOR = "cairn-pipelines"
_TERMINAL: dict[str, Literal["Completed", "Failed", "Canceled"]] = {
    "Completed": "Completed",
    "Failed": "Failed",
    "Canceled": "Canceled",
}
#: how often every active pipeline is looked at, changed or not (a submit that failed)
_FULL_PASS_S = 3.0
#: at most this many steps of one pipeline started or followed at once in a pass (a wave
#: of 48 reused steps writes its child runs in one go)
_CONCURRENT = 64
#: at most this many steps' decisions in one append
_BATCH = 100
#: passes started by submissions themselves, at most, at once
_KICKED = 16
_T = TypeVar("_T")


class PipelinesService(ProjectedService):
    name = "pipelines"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        projection = PipelinesProjection()
        super().__init__(conn, settings, projection)
        self.settings = settings
        #: the longest wait between passes; a pass starts at once on a fact it acts on
        self.tick_s = 0.5
        self._wake = asyncio.Event()
        projection.on_change = self._wake.set
        self.pythons = Pythons(conn, downloads=settings.python_downloads)
        self.seen: dict[tuple[str, str], int] = {}  # pipeline -> the seq last reconciled
        self.full_pass_at = 0.0
        #: one pass at a time per pipeline in this process (another replica's are caught by
        #: the appends' CAS and the derived command ids)
        #: one lock per pipeline with a pass running or waiting, and how many use it: it is
        #: dropped when the last one leaves (never while one waits for it)
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._kicked: set[asyncio.Task[None]] = set()  # passes started by a submission
        self.published = PublishedPipelines(self)
        self.parallel = ParallelRuns(self)
        self.batch = BatchEndpoints(self)
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter("pipeline")],
                queue="pipelines",
                types=PIPELINE_COMMAND_TYPES,
                routes={SubmitPipeline.VERB: self._submit, **self.published.commands()},
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("pipeline")],
                queue="pipelines",
                types=PIPELINE_QUERY_TYPES,
                routes={GetPipeline.NAME: self._get, **self.published.queries()},
            ),
            Responder(
                conn,
                subjects=[subjects.command_filter("parallel")],
                queue="pipelines",
                types=PARALLEL_COMMAND_TYPES,
                routes=self.parallel.commands(),
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("parallel")],
                queue="pipelines",
                types=PARALLEL_QUERY_TYPES,
                routes=self.parallel.queries(),
            ),
            Responder(
                conn,
                subjects=[subjects.command_filter("batch")],
                queue="pipelines",
                types=BATCH_COMMAND_TYPES,
                routes=self.batch.commands(),
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("batch")],
                queue="pipelines",
                types=BATCH_QUERY_TYPES,
                routes=self.batch.queries(),
            ),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):  # decide on a caught-up view where possible
            await self.projection.wait_for(await self.store.last_seq(), timeout=30)
        loop = asyncio.create_task(self._loop(stop))
        try:
            await super().run(stop)
        finally:
            await loop
            for task in list(self._kicked):
                task.cancel()
            await asyncio.gather(*self._kicked, return_exceptions=True)

    async def _loop(self, stop: asyncio.Event) -> None:
        await reconcile_every(
            stop, self.tick_s, self.reconcile, "reconcile_failed", wake=self._wake
        )

    # -- commands -------------------------------------------------------------------------

    async def _submit(self, req: Request) -> Accepted:
        return await self.submit(req, req.body)

    async def submit(self, req: Request, cmd: SubmitPipeline) -> Accepted:
        """Check ``cmd`` and record it under ``req``'s command id and sender; create its run."""
        ws = req.workspace
        await lookup.require_workspace(self.cache, ws)
        if cmd.scheduled is not None:
            await self.published.check_fired(ws, cmd, req.actor)
        try:
            experiment_id = await lookup.experiment_id(self.cache, ws, cmd.experiment_name)
            await self.check(ws, cmd)
        except CairnError:
            # a copy sent again after its first was accepted (its reply lost), whose compute
            # target or environment has gone since: the replay it is, as the scheduler says
            done = await replayed(req.context(), pipelines.KIND, cmd.run_id, self.cache)
            if done is None:
                raise
            return done
        submit = pipelines.SubmitResolvedPipeline(command=cmd, experiment_id=experiment_id)
        accepted = await execute(
            req.context(), pipelines.AGGREGATE, cmd.run_id, submit, cache=self.cache, new=True
        )
        state = await self._state(ws, cmd.run_id)
        seq = await self._ensure_run(ws, state, experiment_id)
        if not accepted.replayed:
            self._kick(ws, cmd.run_id)
        return msgspec.structs.replace(accepted, seq=max(accepted.seq, seq))

    def _kick(self, ws: str, pid: str) -> None:
        """A pass over a pipeline just submitted, now: its first wave (or, when every step is
        reused, all of it) need not wait until the read model applies the submission. At most
        ``_KICKED`` at once: past them (a burst of submissions) the loop's passes, woken as
        the read model applies each submission, take the pipeline."""
        if len(self._kicked) >= _KICKED:
            return
        task = asyncio.create_task(self._pass(ws, pid))
        self._kicked.add(task)
        task.add_done_callback(self._kicked.discard)

    async def _pass(self, ws: str, pid: str) -> None:
        try:
            await self.reconcile_pipeline(ws, pid)
        except Exception as exc:  # the loop's passes take it from here
            log.warning("pipeline_reconcile_failed", run_id=pid, error=repr(exc))

    async def check(self, ws: str, cmd: SubmitPipeline) -> None:
        """Refuse what the scheduler would refuse when a step starts (a bad graph too)."""
        pipelines.check_pipeline(cmd.pipeline)
        for step in cmd.pipeline.steps:
            await self._check_step(ws, cmd, step)

    async def _check_step(self, ws: str, cmd: SubmitPipeline, step: PipelineStep) -> None:
        """Refuse at submission what the scheduler would refuse when the step starts."""
        where = f"jobs.{step.name}"
        try:
            await resolve_asset(
                self.cache, self.settings, ws, "compute", step.compute, None, max_age_s=EXISTS_FOR_S
            )
        except NotFound as exc:
            raise InvalidBinding.at(f"{where}.compute", exc.message) from exc
        job = _child_job(cmd.run_id, step, [])
        try:
            await resolve_job(self.cache, self.settings, ws, job, self.pythons)
        except CairnError as exc:
            raise InvalidBinding.at(where, exc.message) from exc

    async def _get(self, req: Request) -> QueryResult:
        q: GetPipeline = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            return read_pipeline(db, t, req.workspace, q.run_id)

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"no pipeline {q.run_id}")
        state = await self._state(req.workspace, q.run_id)
        if state.spec is not None:  # the steps not started yet, in the pipeline's order
            listed = {s["step"] for s in result.data["steps"]}
            for step in state.spec.steps:
                if step.name not in listed:
                    result.data["steps"].append({"step": step.name, "status": "NotStarted"})
            result.data["outputs"] = [msgspec.to_builtins(o) for o in state.spec.outputs]
            upstream = {s.name: sorted(pipelines.upstream(s)) for s in state.spec.steps}
            for found in result.data["steps"]:
                found["upstream"] = upstream.get(found["step"], [])
        for step in result.data["steps"]:
            started, ended = step.get("started_at"), step.get("ended_at")
            step["duration_s"] = round(ended - started, 3) if started and ended else None
        return result

    # -- decisions ------------------------------------------------------------------------

    def _ctx(self, ws: str, command_id: str) -> CommandContext:
        return CommandContext(workspace=ws, command_id=command_id, actor=ACTOR)

    async def _decide(
        self, ws: str, pid: str, command_id: str, command: pipelines.PipelineCommand
    ) -> PipelineState:
        """A decision on the pipeline, then the pipeline as the log has it (which may hold
        another orchestrator's decision instead)."""
        await execute(
            self._ctx(ws, command_id), pipelines.AGGREGATE, pid, command, cache=self.cache
        )
        return await self._state(ws, pid)

    async def _on_run(
        self, ws: str, run_id: str, command_id: str, command: runs.RunCommand, *, new: bool = False
    ) -> int:
        ctx = self._ctx(ws, command_id)
        return (await execute(ctx, runs.AGGREGATE, run_id, command, cache=self.cache, new=new)).seq

    async def _state(self, ws: str, pid: str) -> PipelineState:
        return await lookup.state(self.cache, pipelines.AGGREGATE, ws, pid, fresh=True)

    async def _cached(self, ws: str, pid: str) -> PipelineState:
        """The pipeline as this process last saw it (its own appends included): a decision
        on a stale view is caught by the append's CAS."""
        return await lookup.state(self.cache, pipelines.AGGREGATE, ws, pid)

    async def _ensure_run(self, ws: str, state: PipelineState, experiment_id: str = "") -> int:
        """The pipeline run exists and is Running (or ended): created by the submission, or
        by a later pass when the submitting process died in between."""
        pid = state.run_id
        run = await lookup.state(self.cache, runs.AGGREGATE, ws, pid)
        if run.exists and run.status != runs.RunStatus.NOT_STARTED:
            return 0  # started, as the log has it (a start is for good): nothing to read
        run = await lookup.state(self.cache, runs.AGGREGATE, ws, pid, fresh=True)
        seq = 0
        if not run.exists:
            experiment_id = experiment_id or await lookup.experiment_id(
                self.cache, ws, state.experiment_name
            )
            submitted = await self._submitted(ws, pid)
            create = CreateRun(
                command_id=derived_id("pl-run", pid),
                run_id=pid,
                experiment_name=state.experiment_name,
                display_name=submitted.display_name,
            )
            # driven by this service, not by a process that beats: no liveness check for it
            command = runs.CreateResolvedRun(
                command=create, experiment_id=experiment_id, controller="pipeline"
            )
            with contextlib.suppress(AlreadyExists):
                seq = await self._on_run(ws, pid, create.command_id, command, new=True)
            properties = {"run_type": "pipeline"}
            if submitted.description:
                properties["description"] = submitted.description
            cid = derived_id("pl-props", pid)
            cmd: runs.RunCommand = AddRunProperties(
                command_id=cid, run_id=pid, properties=properties
            )
            seq = max(seq, await self._on_run(ws, pid, cid, cmd))
            if submitted.tags:
                cid = derived_id("pl-tags", pid)
                cmd = SetRunTags(command_id=cid, run_id=pid, tags=submitted.tags)
                seq = max(seq, await self._on_run(ws, pid, cid, cmd))
            run = await lookup.run_state(self.cache, ws, pid)
        if run.status == runs.RunStatus.NOT_STARTED:
            cid = derived_id("pl-start", pid)
            seq = max(seq, await self._on_run(ws, pid, cid, StartRun(command_id=cid, run_id=pid)))
        return seq

    async def _submitted(self, ws: str, pid: str) -> PipelineSubmitted:
        history = await self.cache.refresh(subjects.event(ws, pipelines.KIND, pid))
        for recorded in history:
            if isinstance(recorded.envelope.data, PipelineSubmitted):
                return recorded.envelope.data
        raise NotFound(f"pipeline {pid} does not exist")

    # -- the reconcile loop ---------------------------------------------------------------

    async def reconcile(self) -> None:
        """One pass over the pipelines that changed (all active ones now and then)."""
        full = time.monotonic() >= self.full_pass_at
        if full:
            self.full_pass_at = time.monotonic() + _FULL_PASS_S

        def active(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str, int]]:
            rows = db.execute(
                f"SELECT p.workspace, p.run_id, p.seq FROM {t('pipelines')} p"
                f" LEFT JOIN {t('watch')} w ON w.workspace = p.workspace AND w.run_id = p.run_id"
                " WHERE p.status = 'Running' OR w.status IS NULL"
                " OR w.status NOT IN ('Completed', 'Failed', 'Canceled')"
            )
            return [(str(w), str(r), int(s)) for w, r, s in rows]

        rows, _ = self.projection.read(active)
        todo = [(ws, pid, seq) for ws, pid, seq in rows if full or self.seen.get((ws, pid)) != seq]
        live = {(ws, pid) for ws, pid, _ in rows}
        self.seen = {k: v for k, v in self.seen.items() if k in live}

        async def one(ws: str, pid: str, seq: int) -> None:
            try:
                await self.reconcile_pipeline(ws, pid)
                self.seen[(ws, pid)] = seq
            except Exception as exc:  # this pipeline waits for the next pass, not the others
                log.warning("pipeline_reconcile_failed", run_id=pid, error=repr(exc))

        await asyncio.gather(*(one(*row) for row in todo))

    def _runs(self, ws: str, pid: str) -> dict[str, tuple[str | None, str]]:
        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, tuple[str | None, str]]:
            rows = db.execute(
                f"SELECT run_id, status, error FROM {t('watch')} WHERE workspace=? AND pipeline=?",
                (ws, pid),
            )
            return {str(r): (s, str(e or "")) for r, s, e in rows}

        return self.projection.read(fn)[0]

    async def reconcile_pipeline(self, ws: str, pid: str) -> None:
        """One pass over pipeline ``pid``: what its steps' ends and its state call for."""
        key = (ws, pid)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await self._reconcile_pipeline(ws, pid)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _reconcile_pipeline(self, ws: str, pid: str) -> None:
        state = await self._state(ws, pid)
        spec = state.spec
        if not state.exists or spec is None:
            return
        await self._ensure_run(ws, state)
        watched = self._runs(ws, pid)
        if state.ended:
            await self._end_run(ws, state)
            return
        run = await lookup.run_state(self.cache, ws, pid)
        # the pipeline's run ended under it (canceled, failed by hand or as lost): it stops
        run_ended = run.status if run.status.terminal else None
        failed = {n for n, s in state.steps.items() if s.status in ("Failed", "Canceled")}
        stop = run_ended is not None or bool(failed and not spec.continue_on_step_failure)
        followed = [(n, s) for n, s in state.steps.items() if s.status in ("Running", "Reused")]
        found = await _bounded(
            functools.partial(self._follow, ws, state, name, step, watched, stop)
            if step.status == "Running"
            else functools.partial(self._reused, ws, state, name, step)
            for name, step in followed
        )
        ends = [end for end in found if isinstance(end, pipelines.EndStep)]
        unstarted = [s.name for s in spec.steps if s.name not in state.steps]
        skip = set(unstarted) if stop else pipelines.downstream(spec, failed)
        ends += [pipelines.EndStep(step=n, status="Skipped") for n in unstarted if n in skip]
        if followed:  # what following them decided (a refused submission's end) included
            state = await self._cached(ws, pid)
        if stop or any(isinstance(f, BaseException) for f in found):
            state = await self._end_steps(ws, pid, ends) if ends or followed else state
            _raise_first(found)
            ends = []
        while not stop:  # wave after wave: a reused step has completed when it is decided
            ahead = _ahead(state, ends)  # as it is once the ends found are recorded
            if ahead is None:  # refused: the ends alone, as recorded before
                state, ends = await self._end_steps(ws, pid, ends), []
                ahead = state
            wave = [s for s in spec.steps if s.name not in ahead.steps and self._ready(ahead, s)]
            if not wave:
                break
            # the ends it waited for and the wave's decisions: one append
            state, ends = await self._start_wave(ws, state, ahead, ends, wave)
            if any(s.status in ("Failed", "Canceled") for s in state.steps.values()):
                break  # the next pass skips what follows it, or stops the pipeline
        if ends:
            state = await self._end_steps(ws, pid, ends)
        if all(s.name in state.steps and state.steps[s.name].ended for s in spec.steps):
            await self._finish(ws, state, run_ended, run.error)

    def _ready(self, state: PipelineState, step: PipelineStep) -> bool:
        return all(
            (s := state.steps.get(up)) is not None and s.status == "Completed"
            for up in pipelines.upstream(step)
        )

    async def _follow(
        self,
        ws: str,
        state: PipelineState,
        name: str,
        step: StepState,
        watched: dict[str, tuple[str | None, str]],
        stop: bool,
    ) -> pipelines.EndStep | None:
        """A started step: its job submitted (again, under the same id: a no-op once it is),
        its end to record, or its run stopped when the pipeline stops."""
        pid = state.run_id
        status, error = watched.get(step.run_id, (None, ""))
        if status is None:
            await self._submit_step(ws, state, state.step(name), step.run_id)
            status, error = self._runs(ws, pid).get(step.run_id, (None, ""))
        if status is not None and (ended := _TERMINAL.get(status)) is not None:
            return pipelines.EndStep(step=name, status=ended, error=error)
        if stop:
            cid = derived_id("pl-cancel", step.run_id)
            reason = "the pipeline stopped"
            with contextlib.suppress(InvalidTransition, NotFound):
                await self._on_run(
                    ws,
                    step.run_id,
                    cid,
                    CancelRun(command_id=cid, run_id=step.run_id, reason=reason),
                )
        return None

    async def _start_wave(
        self,
        ws: str,
        state: PipelineState,
        ahead: PipelineState,
        ends: list[pipelines.EndStep],
        wave: list[PipelineStep],
    ) -> tuple[PipelineState, list[pipelines.EndStep]]:
        """Start or reuse every step of ``wave`` (each ready in ``ahead``: ``state`` with
        ``ends`` recorded; none decided yet): their reuse keys found concurrently, ``ends`` and
        the decisions taken in one append, then each followed through (a job submitted, a
        reused step's child run) concurrently. Returns the pipeline as the log has it and the
        reused steps' ends, which the next wave's append records (or one of their own)."""
        pid = state.run_id
        chosen = await _bounded(functools.partial(self._choose, ws, ahead, s) for s in wave)
        decisions = [c for c in chosen if not isinstance(c, BaseException)]
        state = await self._decide_many(ws, pid, "pl-step", [*ends, *decisions])
        by_name = {s.name: s for s in wave}
        decided = [(n, state.steps[n]) for n in by_name if n in state.steps]
        found = await _bounded(
            functools.partial(self._submit_step, ws, state, by_name[name], step.run_id)
            if step.status == "Running"
            else functools.partial(self._reused, ws, state, name, step)
            for name, step in decided
            if step.status in ("Running", "Reused")
        )
        ended = [end for end in found if isinstance(end, pipelines.EndStep)]
        state = await self._cached(ws, pid)  # a refused submission's end included
        if any(isinstance(r, BaseException) for r in [*chosen, *found]):
            await self._end_steps(ws, pid, ended)
            _raise_first([*chosen, *found])
        return state, ended

    async def _choose(
        self, ws: str, state: PipelineState, step: PipelineStep
    ) -> pipelines.StartStep | pipelines.ReuseStep:
        """Whether ``step`` starts or reuses an earlier run: its reuse key and the run that
        completed with it, if reuse is allowed."""
        pid = state.run_id
        upstream: dict[str, list[list[str]]] = {}
        for bound in step.step_inputs:
            producer = _producer(state.steps[bound.step])
            upstream[bound.name] = (
                await upstream_fingerprint(self.cache, ws, producer, bound.output)
            )[0]
        client = Client(self.conn, ws)
        try:
            key = await reuse_key(self.cache, self.settings, client, step, upstream)
        except CairnError as exc:  # an input that cannot be read: the job will say so
            log.info("no_reuse_key", run_id=pid, step=step.name, error=exc.message)
            key = ""
        assert state.spec is not None
        reuse = key and step.allow_reuse and not state.spec.force_rerun
        found = self._reusable(ws, key) if reuse else None
        if found is not None:
            reason = f"the same code, environment, command and inputs as run {found}"
            return pipelines.ReuseStep(
                step=step.name, reused_run_id=found, reuse_key=key, reason=reason
            )
        return pipelines.StartStep(step=step.name, reuse_key=key)

    async def _end_steps(self, ws: str, pid: str, ends: list[pipelines.EndStep]) -> PipelineState:
        """Record ``ends`` (one append); the pipeline as the log has it."""
        return await self._decide_many(ws, pid, "pl-end", ends)

    async def _decide_many(
        self,
        ws: str,
        pid: str,
        kind: str,
        commands: Sequence[pipelines.StartStep | pipelines.ReuseStep | pipelines.EndStep],
    ) -> PipelineState:
        """Decide per-step ``commands`` on the pipeline: one alone under its own id
        (``derived_id("pl-step" | "pl-end", pipeline, step)``), several as one command
        (``DecideSteps``, ``EndSteps``: one append) under an id derived from ``kind`` and
        their steps (ends marked as such among decisions); when the aggregate refuses the
        batch, each is decided alone (the others' decisions still stand). The pipeline as the
        log has it after them."""
        if not commands:
            return await self._state(ws, pid)
        if len(commands) == 1:
            (only,) = commands
            return await self._decide(ws, pid, derived_id(_kind(only), pid, only.step), only)
        state: PipelineState | None = None
        for i in range(0, len(commands), _BATCH):
            part = list(commands[i : i + _BATCH])
            batch: pipelines.PipelineCommand
            ends = [c for c in part if isinstance(c, pipelines.EndStep)]
            if kind == "pl-end" and len(ends) == len(part):
                batch = pipelines.EndSteps(steps=ends)
                names = sorted(c.step for c in part)
            else:
                batch = pipelines.DecideSteps(steps=part)
                names = sorted(c.step if _kind(c) == kind else f"{_kind(c)}:{c.step}" for c in part)
            try:
                state = await self._decide(ws, pid, derived_id(f"{kind}s", pid, *names), batch)
            except REFUSALS:  # one of them is refused: each alone, as before the batch
                for command in part:
                    cid = derived_id(_kind(command), pid, command.step)
                    state = await self._decide(ws, pid, cid, command)
        assert state is not None
        return state

    def _reusable(self, ws: str, key: str) -> str | None:
        def fn(db: sqlite3.Connection, t: Tables) -> str | None:
            row = db.execute(
                f"SELECT run_id FROM {t('reuse')} WHERE workspace=? AND reuse_key=?", (ws, key)
            ).fetchone()
            return str(row[0]) if row else None

        return self.projection.read(fn)[0]

    async def _submit_step(
        self, ws: str, state: PipelineState, step: PipelineStep, run_id: str
    ) -> None:
        """Submit the step's job (its inputs bound to the upstream runs' outputs) through
        the scheduler, as any job is."""
        bound: list[JobInput] = []
        for item in step.step_inputs:
            producer = _producer(state.steps[item.step])
            _, out = await upstream_fingerprint(self.cache, ws, producer, item.output)
            bound.append(
                JobInput(name=item.name, mode=item.mode, datastore=out.datastore, path=out.path)
            )
        cmd = _child_job(state.run_id, step, bound, run_id=run_id, experiment=state.experiment_name)
        try:
            await Client(self.conn, ws).send(cmd)
        except AlreadyExists:  # submitted under this id before: a replay answers Accepted
            pass
        except REFUSALS as exc:  # it cannot run as written: the step fails, the pipeline follows
            if await _run_exists(self.cache, ws, run_id):  # an earlier copy was accepted
                return
            log.warning("step_submit_refused", run_id=run_id, error=exc.message)
            end = pipelines.EndStep(step=step.name, status="Failed", error=exc.message)
            await self._decide(ws, state.run_id, derived_id("pl-end", state.run_id, step.name), end)
        # anything else (the scheduler away or slow, a conflict) raises: the pipeline is looked
        # at again on the next pass, which sends the same command id again

    async def _reused(
        self, ws: str, state: PipelineState, name: str, step: StepState
    ) -> pipelines.EndStep:
        """The child run of a reused step: created under the pipeline run, marked with the run
        it stands for and why, and completed; then the step's end to record (Completed)."""
        pid, run_id = state.run_id, step.run_id
        experiment_id = await lookup.experiment_id(self.cache, ws, state.experiment_name)
        create = CreateRun(
            command_id=derived_id("pl-reuse", pid, name),
            run_id=run_id,
            experiment_name=state.experiment_name,
            display_name=state.step(name).display_name or name,
            parent_run_id=pid,
        )
        # three single appends, not one atomic batch: JetStream takes several batches at
        # once on a stream far more slowly (48 batches of 3 at once: 0.6-1 s; the same 144
        # events as single appends: 5-50 ms; docs/benchmarks.md, pipelines)
        with contextlib.suppress(AlreadyExists):
            await self._on_run(
                ws,
                run_id,
                create.command_id,
                runs.CreateResolvedRun(command=create, experiment_id=experiment_id),
                new=True,
            )
        reason = await self._reuse_reason(ws, pid, name)
        properties = {"reused": "true", "reused_run_id": step.reused_run_id, "reuse_reason": reason}
        cid = derived_id("pl-reused", run_id)
        await self._on_run(
            ws, run_id, cid, AddRunProperties(command_id=cid, run_id=run_id, properties=properties)
        )
        cid = derived_id("pl-reused-end", run_id)
        await self._on_run(ws, run_id, cid, CompleteRun(command_id=cid, run_id=run_id))
        return pipelines.EndStep(step=name, status="Completed")

    async def _reuse_reason(self, ws: str, pid: str, name: str) -> str:
        """The reason recorded with the step's reuse: from the cached history (refreshed
        after the decision) when it holds it, else from the log."""
        subject = subjects.event(ws, pipelines.KIND, pid)
        for history in (self.cache.get(subject) or [], None):
            if history is None:
                history = await self.cache.refresh(subject)
            for recorded in history:
                ev = recorded.envelope.data
                if isinstance(ev, PipelineStepReused) and ev.step == name:
                    return ev.reason
        return ""

    async def _finish(
        self, ws: str, state: PipelineState, run_ended: runs.RunStatus | None, run_error: str
    ) -> None:
        """Every step has ended: the pipeline's run ends (unless it ended first), then the
        pipeline."""
        failed = sorted(n for n, s in state.steps.items() if s.status != "Completed")
        if run_ended == runs.RunStatus.CANCELED:
            end = pipelines.EndPipeline(status="Canceled", error="canceled")
        elif run_ended == runs.RunStatus.FAILED:
            error = f"the pipeline's run failed: {run_error[:200]}"
            end = pipelines.EndPipeline(status="Failed", error=error)
        elif failed:
            errors = [
                f"{n}: {state.steps[n].status}"
                + (f" ({state.steps[n].error[:200]})" if state.steps[n].error else "")
                for n in failed
            ]
            end = pipelines.EndPipeline(status="Failed", error="; ".join(errors))
        else:
            end = pipelines.EndPipeline(status="Completed")
        ended = msgspec.structs.replace(state, status=end.status, error=end.error)
        await self._end_run(ws, ended)
        await self._decide(ws, state.run_id, derived_id("pl-done", state.run_id), end)

    async def _end_run(self, ws: str, state: PipelineState) -> None:
        pid = state.run_id
        cid = derived_id("pl-done-run", pid)
        command: runs.RunCommand
        if state.status == "Completed":
            command = CompleteRun(command_id=cid, run_id=pid)
        elif state.status == "Failed":
            command = FailRun(command_id=cid, run_id=pid, error=state.error)
        else:
            command = CancelRun(command_id=cid, run_id=pid, reason=state.error)
        with contextlib.suppress(InvalidTransition):  # canceled by hand meanwhile
            await self._on_run(ws, pid, cid, command)


async def _bounded(works: Iterable[Callable[[], Awaitable[_T]]]) -> list[_T | BaseException]:
    """Await ``works`` concurrently, at most ``_CONCURRENT`` at a time: each one's result or
    what it raised (the others' decisions stand; :func:`_raise_first` once they are used)."""
    gate = asyncio.Semaphore(_CONCURRENT)

    async def one(work: Callable[[], Awaitable[_T]]) -> _T:
        async with gate:
            return await work()

    return await asyncio.gather(*(one(w) for w in works), return_exceptions=True)


def _raise_first(results: Iterable[object]) -> None:
    """Raise the first failure among ``_bounded``'s results (the pipeline waits for the next
    pass, as when a decision taken alone fails)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _run_exists(cache: AggregateCache, ws: str, run_id: str) -> bool:
    """Whether the log holds the run (a job's run exists once its submission was accepted)."""
    return bool((await lookup.state(cache, runs.AGGREGATE, ws, run_id, fresh=True)).exists)


def _kind(command: pipelines.StartStep | pipelines.ReuseStep | pipelines.EndStep) -> str:
    """The prefix of a per-step decision's command id."""
    return "pl-end" if isinstance(command, pipelines.EndStep) else "pl-step"


def _ahead(state: PipelineState, ends: list[pipelines.EndStep]) -> PipelineState | None:
    """``state`` as it is once ``ends`` are recorded (None: the aggregate refuses them)."""
    if not ends:
        return state
    try:
        events = pipelines.decide(state, pipelines.EndSteps(steps=ends))
    except REFUSALS:
        return None
    for event in events:
        state = pipelines.evolve(state, event)
    return state


def _producer(step: StepState) -> str:
    """The run whose files a completed step's outputs are (a reused step's: the earlier run)."""
    return step.reused_run_id or step.run_id


def _child_job(
    pid: str,
    step: PipelineStep,
    bound: list[JobInput],
    *,
    run_id: str = "check",
    experiment: str = "check",
) -> SubmitJob:
    job = msgspec.structs.replace(step.job, inputs=[*step.job.inputs, *bound])
    return SubmitJob(
        command_id=derived_id("pl-submit", run_id),
        run_id=run_id,
        experiment_name=experiment,
        compute=step.compute,
        job=job,
        environment_name=step.environment_name,
        environment_version=step.environment_version,
        display_name=step.display_name or step.name,
        tags={**step.tags, "pipeline_step": step.name},
        parent_run_id=pid,
    )
