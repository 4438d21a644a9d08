"""The sweeps service: sweep commands and queries, and the controller that drives each sweep.

The controller is a process manager of the scheduler's shape: read models of EVENTS (sweeps,
their trials, the child runs' states) and METRICS (the trial runs' reports), and a reconcile
loop that turns what they say into the next decision for each running sweep, taken on the
sweep aggregate (``cairn.domain.sweep``) under a command id derived from the fact it follows:
``derived_id("propose", sweep, n)``, ``derived_id("stop", sweep, n)``... The aggregate
refuses what would break a limit, so two controllers, or one that died and came back, take
each decision once. Trials are child jobs submitted through the scheduler (``SubmitJob``
with ``parent_run_id``, run id ``derived_id("trial", sweep, n)``), canceled with
``CancelRun``; the parent run is started and ended here on the run aggregate.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import CommandContext, Connection, EventStore, execute
from cairn.domain import run as runs
from cairn.domain import sweep
from cairn.errors import REFUSALS, CairnError, NotFound, Unavailable
from cairn.log import get_logger
from cairn.projection import ProjectionRunner, Tables
from cairn.proto import subjects
from cairn.proto.commands import (
    Accepted,
    CancelRun,
    CompleteRun,
    CreateRun,
    FailRun,
    QueryResult,
    SetRunTags,
    StartRun,
)
from cairn.proto.jobs import SubmitJob, derived_id
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import METRICS
from cairn.proto.sweeps import (
    SWEEP_COMMAND_TYPES,
    SWEEP_QUERY_TYPES,
    CancelSweep,
    GetSweep,
    SubmitSweep,
    parameter_placeholder,
)
from cairn.rpc import Client, Request, Responder
from cairn.service import ProjectedService, reconcile_every
from cairn.services.sweeps._policy import evaluate
from cairn.services.sweeps._projection import ReportsProjection, SweepsProjection
from cairn.services.sweeps._sampling import propose
from cairn.settings import Settings

__all__ = ["SweepsService", "trial_command", "trial_run_id"]

log = get_logger("cairn.sweeps")
ACTOR = "cairn-sweeps"
_TERMINAL = {s.value for s in runs.RunStatus if s.terminal}
#: how long a pass waits for the reports read model to read an ended trial's last metrics
_REPORTS_WAIT_S = 1.0
#: timer ticks a controller lets pass without a pass when nothing asked for one (a fact
#: missed by the wake-ups is still followed within this many ticks)
_IDLE_TICKS = 5


def trial_run_id(sweep_id: str, index: int) -> str:
    return derived_id("trial", sweep_id, index)


def _word(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def trial_command(command: list[str], parameters: dict[str, Any]) -> list[str]:
    """The trial's argv: each ``${{search_space.<name>}}`` replaced by the trial's value."""
    out = []
    for word in command:
        for name, value in parameters.items():
            word = word.replace(parameter_placeholder(name), _word(value))
        out.append(word)
    return out


class SweepsService(ProjectedService):
    name = "sweeps"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        projection = SweepsProjection()
        super().__init__(conn, settings, projection)
        self.settings = settings
        self.reports: ProjectionRunner[MetricsLogged] = ProjectionRunner(
            conn,
            settings.state_path / f"{self.projection.projection.name}.sqlite",
            ReportsProjection(),
        )
        self._stop_reports = asyncio.Event()
        self._reports_task: asyncio.Task[None] | None = None
        #: the longest wait between passes (a policy's reports announce nothing); a pass
        #: starts at once on a sweep's event or a run's end
        self.tick_s = 0.2
        self._wake = asyncio.Event()
        projection.on_change = self.fact_applied
        #: a fact the loop acts on was applied since the last pass began
        self.changed = True
        #: the last pass left something for the timer: a policy or a timeout to follow, a
        #: trial's reports not read yet, a proposal not taken, a failed or refused decision
        self.pending = True
        #: timer ticks skipped since the last pass
        self.idle = 0
        self.metrics = EventStore(conn, stream=METRICS.name)
        #: (workspace, sweep, trial) -> the last interval the policy was applied at
        self.evaluated: dict[tuple[str, str, int], int] = {}
        #: (workspace, sweep) -> trial index -> its primary metric's reports read so far
        self.series: dict[tuple[str, str], dict[int, list[float]]] = {}
        #: (workspace, sweep) -> the trials whose job this process had accepted: a pass sends
        #: ``SubmitJob`` again only for a trial outside it whose run the read model has not
        #: seen submitted (another controller's proposal, or one from before a restart)
        self.submitted: dict[tuple[str, str], set[int]] = {}
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter("sweep")],
                queue="sweeps",
                types=SWEEP_COMMAND_TYPES,
                routes={SubmitSweep.VERB: self._submit, CancelSweep.VERB: self._cancel},
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("sweep")],
                queue="sweeps",
                types=SWEEP_QUERY_TYPES,
                routes={GetSweep.NAME: self._get},
            ),
        ]

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._reports_task = asyncio.create_task(self.reports.run(self._stop_reports))
        await super().start()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.create_task(self._loop(stop))
        try:
            await super().run(stop)
        finally:
            await loop
            self._stop_reports.set()
            if self._reports_task is not None:
                await self._reports_task
            self.reports.close()

    async def _loop(self, stop: asyncio.Event) -> None:
        await reconcile_every(
            stop, self.tick_s, self.reconcile, "sweeps_reconcile_failed", wake=self._wake
        )

    # -- commands and queries ------------------------------------------------------------

    async def _submit(self, req: Request) -> Accepted:
        cmd: SubmitSweep = req.body
        ws = req.workspace
        sweep.check(cmd.spec, cmd.trial.job.command)  # before anything is created
        await lookup.require_workspace(self.cache, ws)
        experiment_id = await lookup.experiment_id(self.cache, ws, cmd.experiment_name)
        seed = cmd.spec.sampling.seed
        if seed is None:
            seed = secrets.randbelow(2**32)
        create = runs.CreateResolvedRun(
            command=CreateRun(
                command_id=cmd.command_id,
                run_id=cmd.run_id,
                experiment_name=cmd.experiment_name,
                display_name=cmd.display_name,
            ),
            experiment_id=experiment_id,
            controller="sweep",
        )
        ctx = req.context()
        run_ctx = CommandContext(
            workspace=ws,
            command_id=derived_id("sweep-run", cmd.command_id),
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
        )
        await execute(run_ctx, runs.AGGREGATE, cmd.run_id, create, cache=self.cache, new=True)
        if cmd.tags:
            tags = SetRunTags(
                command_id=derived_id("sweep-tags", cmd.command_id),
                run_id=cmd.run_id,
                tags=cmd.tags,
            )
            tags_ctx = CommandContext(
                workspace=ws,
                command_id=tags.command_id,
                actor=ctx.actor,
                correlation_id=ctx.correlation_id,
            )
            await execute(tags_ctx, runs.AGGREGATE, cmd.run_id, tags, cache=self.cache)
        resolved = sweep.SubmitResolvedSweep(command=cmd, seed=seed)
        return await execute(ctx, sweep.AGGREGATE, cmd.run_id, resolved, cache=self.cache, new=True)

    async def _cancel(self, req: Request) -> Accepted:
        cmd: CancelSweep = req.body
        return await execute(req.context(), sweep.AGGREGATE, cmd.run_id, cmd, cache=self.cache)

    async def _get(self, req: Request) -> QueryResult:
        q: GetSweep = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> dict[str, Any] | None:
            return _sweep_view(db, t, req.workspace, q.run_id)

        result = await self.read(req, fn)
        if result.data is None:
            raise NotFound(f"no sweep {q.run_id}")
        return result

    # -- the controller ------------------------------------------------------------------

    def _active(self) -> list[tuple[str, str, float]]:
        def fn(db: sqlite3.Connection, t: Tables) -> list[tuple[str, str, float]]:
            ended = ",".join("?" * len(_TERMINAL))
            rows = db.execute(
                f"SELECT workspace, run_id, submitted_at FROM {t('sweeps')} WHERE status='Running'"
                f" OR parent_status IS NULL OR parent_status NOT IN ({ended})",
                sorted(_TERMINAL),
            )
            return [(str(w), str(r), float(at)) for w, r, at in rows]

        return self.projection.read(fn)[0]

    def fact_applied(self) -> None:
        """Called by the sweeps read model for each event the loop acts on: a pass now."""
        self.changed = True
        self._wake.set()

    async def reconcile(self) -> None:
        """A pass over every running sweep; a timer tick with nothing to follow (no fact
        applied since the last pass, which left nothing pending) is skipped, up to
        ``_IDLE_TICKS`` in a row."""
        if not (self.changed or self.pending or self.idle >= _IDLE_TICKS):
            self.idle += 1
            return
        self.changed, self.pending, self.idle = False, False, 0
        try:
            await self._pass()
        except BaseException:
            self.pending = True
            raise

    async def _pass(self) -> None:
        active = self._active()
        live = {(ws, sweep_id) for ws, sweep_id, _ in active}
        self.series = {k: v for k, v in self.series.items() if k in live}
        self.submitted = {k: v for k, v in self.submitted.items() if k in live}
        for ws, sweep_id, submitted_at in active:
            try:
                await self.drive(ws, sweep_id, submitted_at)
            except CairnError as exc:  # a race with another controller, or bad input
                self.pending = True
                log.warning("sweep_decision_refused", sweep=sweep_id, error=repr(exc))
            except Exception as exc:  # this sweep waits for the next pass, not the others
                self.pending = True
                log.exception("sweep_drive_failed", sweep=sweep_id, error=repr(exc))

    async def _decide(
        self, ws: str, sweep_id: str, command_id: str, command: sweep.SweepCommand
    ) -> sweep.SweepState:
        ctx = CommandContext(workspace=ws, command_id=command_id, actor=ACTOR)
        accepted = await execute(ctx, sweep.AGGREGATE, sweep_id, command, cache=self.cache)
        # a replayed command (another controller took it first: the server's duplicate answer
        # leaves the cached history as it was) is read back from the log
        return await lookup.state(
            self.cache, sweep.AGGREGATE, ws, sweep_id, fresh=accepted.replayed
        )

    async def _on_run(self, ws: str, run_id: str, command_id: str, command: Any) -> None:
        ctx = CommandContext(workspace=ws, command_id=command_id, actor=ACTOR)
        await execute(ctx, runs.AGGREGATE, run_id, command, cache=self.cache)

    async def drive(self, ws: str, sweep_id: str, submitted_at: float) -> None:
        """One pass over one sweep: start, end trials, stop, propose, end.

        Its reads go out together: the sweep and its run fresh from the log, and the last
        metrics batch of each trial whose run the read model has seen end (what the trial's
        end waits for), so a trial's end costs one round trip before its decision."""
        rows = self._trial_rows(ws, sweep_id)
        ending = {
            i: run_id
            for i, (run_id, status, ended) in rows.items()
            if status in _TERMINAL and ended is None
        }
        reads = asyncio.gather(
            lookup.state(self.cache, sweep.AGGREGATE, ws, sweep_id, fresh=True),
            lookup.run_state(self.cache, ws, sweep_id, fresh=True),
            return_exceptions=True,
        )
        lasts = asyncio.gather(
            *(self.metrics.last_seq_on(subjects.metrics(ws, r)) for r in ending.values()),
            return_exceptions=True,  # one not read here is read again where it is needed
        )
        (state, parent), found = await asyncio.gather(reads, lasts)
        if isinstance(state, BaseException):
            raise state
        if not state.exists:  # the read model is ahead of the log as read: a later pass
            self.pending = True
            return
        if isinstance(parent, BaseException):
            raise parent
        last_batches = {
            i: seq for i, seq in zip(ending, found, strict=True) if isinstance(seq, int)
        }
        if state.ended:
            await self._end_parent(ws, sweep_id, state, parent.status)
            return
        if parent.status.terminal and not state.cancel_requested:  # canceled as a run
            cancel = CancelSweep(command_id=derived_id("parent-ended", sweep_id), run_id=sweep_id)
            state = await self._decide(ws, sweep_id, cancel.command_id, cancel)
        if parent.status == runs.RunStatus.NOT_STARTED:
            start = StartRun(command_id=derived_id("sweep-start", sweep_id), run_id=sweep_id)
            await self._on_run(ws, sweep_id, start.command_id, start)
        assert state.spec is not None
        timeout = state.spec.limits.timeout_s
        if timeout is not None or state.spec.policy is not None:  # what the timer follows
            self.pending = True
        if timeout is not None and time.time() > submitted_at + timeout:
            command = sweep.TimeOutSweep(timeout_s=timeout)
            state = await self._decide(ws, sweep_id, derived_id("timeout", sweep_id), command)
        state = await self._follow_trials(ws, sweep_id, state, rows, last_batches)
        state = await self._propose(ws, sweep_id, state)
        if not state.running and not state.proposing:
            state = await self._decide(ws, sweep_id, derived_id("end", sweep_id), sweep.EndSweep())
            await self._end_parent(ws, sweep_id, state, parent.status)

    def _trial_rows(self, ws: str, sweep_id: str) -> dict[int, tuple[str, str | None, str | None]]:
        """Each trial's run id, its run's status and its ``TrialEnded`` status, as read."""

        def fn(db: sqlite3.Connection, t: Tables) -> dict[int, tuple[str, str | None, str | None]]:
            rows = db.execute(
                f"SELECT idx, run_id, status, ended FROM {t('trials')} WHERE workspace=?"
                " AND sweep_id=?",
                (ws, sweep_id),
            )
            return {int(i): (str(r), s, e) for i, r, s, e in rows}

        return self.projection.read(fn)[0]

    def _series(self, ws: str, state: sweep.SweepState) -> dict[int, list[float]]:
        """Each trial's reports of the primary metric, in order. A report's number never
        changes once stored, so a pass reads only those past what the passes before it read
        (kept while the sweep is active)."""
        assert state.spec is not None
        metric = state.spec.objective.primary_metric
        known = self.series.setdefault((ws, state.run_id), {})

        def fn(db: sqlite3.Connection, t: Tables) -> dict[int, list[float]]:
            out: dict[int, list[float]] = {}
            for trial in state.trials:
                before = known.get(trial.index, [])
                if trial.status is not None and len(before) == trial.reports:
                    out[trial.index] = before  # ended with these reports: nothing more comes
                    continue
                rows = db.execute(
                    f"SELECT value FROM {t('reports')} WHERE workspace=? AND run_id=? AND name=?"
                    " AND n > ? ORDER BY n",
                    (ws, trial.run_id, metric, len(before)),
                ).fetchall()
                out[trial.index] = [*before, *(float(v) for (v,) in rows)] if rows else before
            return out

        series = self.reports.read(fn)[0]
        known.update(series)
        return series

    async def _reports_read(self, ws: str, run_id: str, last: int | None) -> bool:
        """Whether the reports read model holds the trial run's last metrics batch (its
        reports are stored before its run ends: its script flushes them before it exits),
        waited for a little; a pass that finds it behind leaves the trial's end to the next.
        ``last``: that batch's sequence when the pass read it already."""
        if last is None:
            last = await self.metrics.last_seq_on(subjects.metrics(ws, run_id))
        try:
            await self.reports.wait_for(last, timeout=_REPORTS_WAIT_S)
        except Unavailable:
            return False
        return True

    async def _follow_trials(
        self,
        ws: str,
        sweep_id: str,
        state: sweep.SweepState,
        rows: dict[int, tuple[str, str | None, str | None]],
        last_batches: dict[int, int],
    ) -> sweep.SweepState:
        statuses = {i: status for i, (_, status, _) in rows.items()}
        running = [t for t in state.trials if t.status is None]
        ended = [t for t in running if statuses.get(t.index) in _TERMINAL]
        read = await asyncio.gather(
            *(self._reports_read(ws, t.run_id, last_batches.get(t.index)) for t in ended)
        )
        caught_up = {t.index for t, ok in zip(ended, read, strict=True) if ok}
        series = self._series(ws, state)
        assert state.spec is not None
        goal, policy = state.spec.objective.goal, state.spec.policy
        mine = self.submitted.get((ws, sweep_id), set())
        for trial in running:
            child = statuses.get(trial.index)
            values = series.get(trial.index, [])
            if child is None:
                if trial.index not in mine:  # its run not seen submitted, nor sent from here
                    await self._submit_trial(ws, state, trial)
            elif child in _TERMINAL:
                if trial.index not in caught_up:  # its last reports not read yet: the next pass
                    self.pending = True
                    continue
                best = (max(values) if goal == "maximize" else min(values)) if values else None
                end = sweep.EndTrial(
                    index=trial.index,
                    status=child,
                    best=best,
                    last=values[-1] if values else None,
                    reports=len(values),
                )
                state = await self._decide(
                    ws, sweep_id, derived_id("trial-end", sweep_id, trial.index), end
                )
                self.evaluated.pop((ws, sweep_id, trial.index), None)
            elif state.cancel_requested or trial.stopped is not None:
                # (a child's cancel reason starting "timeout" would make it a job timeout)
                reason = (
                    trial.stopped.reason
                    if trial.stopped
                    else f"the sweep was stopped: {state.cancel_reason}"
                )
                cancel = CancelRun(
                    command_id=derived_id("trial-cancel", sweep_id, trial.index),
                    run_id=trial.run_id,
                    reason=reason,
                )
                await self._on_run(ws, trial.run_id, cancel.command_id, cancel)
            elif policy is not None:
                state = await self._apply_policy(ws, sweep_id, state, trial.index, series)
        return state

    async def _apply_policy(
        self,
        ws: str,
        sweep_id: str,
        state: sweep.SweepState,
        index: int,
        series: dict[int, list[float]],
    ) -> sweep.SweepState:
        """Apply the policy at each interval the trial reached since the last pass."""
        assert state.spec is not None and state.spec.policy is not None
        key = (ws, sweep_id, index)
        reached = len(series.get(index, []))
        for k in range(self.evaluated.get(key, 0) + 1, reached + 1):
            self.evaluated[key] = k
            stop = evaluate(state.spec.policy, state.spec.objective, index, series, k)
            if stop is None:
                continue
            command = sweep.StopTrial(
                index=index,
                policy=state.spec.policy.kind,
                interval=stop.interval,
                value=stop.value,
                reference=stop.reference,
                threshold=stop.threshold,
                reason=stop.reason,
            )
            log.info("trial_stopped", sweep=sweep_id, trial=index, reason=stop.reason)
            state = await self._decide(ws, sweep_id, derived_id("stop", sweep_id, index), command)
            trial = state.trials[index]
            cancel = CancelRun(
                command_id=derived_id("trial-cancel", sweep_id, index),
                run_id=trial.run_id,
                reason=stop.reason,
            )
            await self._on_run(ws, trial.run_id, cancel.command_id, cancel)
            break
        return state

    async def _propose(self, ws: str, sweep_id: str, state: sweep.SweepState) -> sweep.SweepState:
        """Propose while there is room, each trial's job submitted after its proposal. A
        Bayesian proposal (a TPE study over every earlier trial: tens of ms) is made in a
        thread; a random or grid one (well under a millisecond, whatever the sweep's length)
        on the loop, without a hop to a thread and back between a trial's end and the next
        proposal."""
        assert state.spec is not None
        spec = state.spec
        while state.proposing and state.running < spec.limits.max_concurrent_trials:
            index = len(state.trials)
            seen = {t.index for t in state.trials if t.status is not None}
            args = (spec, state.seed, index, state.trials, seen)
            if spec.sampling.algorithm == "bayesian":
                proposal = await asyncio.to_thread(propose, *args)
            else:
                proposal = propose(*args)
            command = sweep.ProposeTrial(
                index=index,
                run_id=trial_run_id(sweep_id, index),
                parameters=proposal.parameters,
                sampled=proposal.sampled,
                seen=sorted(seen),
            )
            state = await self._decide(
                ws, sweep_id, derived_id("propose", sweep_id, index), command
            )
            if len(state.trials) <= index:  # not in the log as read: the next pass
                self.pending = True
                break
            await self._submit_trial(ws, state, state.trials[index])
        return state

    async def _submit_trial(
        self, ws: str, state: sweep.SweepState, trial: sweep.TrialState
    ) -> None:
        assert state.trial is not None and state.spec is not None
        template = state.trial
        job = msgspec.structs.replace(
            template.job,
            command=trial_command(template.job.command, trial.parameters),
            timeout_s=state.spec.limits.trial_timeout_s or template.job.timeout_s,
        )
        submit = SubmitJob(
            command_id=derived_id("trial-submit", state.run_id, trial.index),
            run_id=trial.run_id,
            experiment_name=state.experiment_name,
            compute=template.compute,
            job=job,
            environment_name=template.environment_name,
            environment_version=template.environment_version,
            display_name=f"{state.run_id}_{trial.index}",
            tags={"hyperparameters": json.dumps(trial.parameters)},
            parent_run_id=state.run_id,
        )
        try:
            await Client(self.conn, ws).send(submit)
            self.submitted.setdefault((ws, state.run_id), set()).add(trial.index)
        except REFUSALS as exc:  # it cannot run as written: it fails
            run = await lookup.state(self.cache, runs.AGGREGATE, ws, trial.run_id, fresh=True)
            if run.exists:  # an earlier copy was accepted: the trial runs
                return
            log.warning("trial_refused", sweep=state.run_id, trial=trial.index, error=exc.message)
            end = sweep.EndTrial(
                index=trial.index, status=runs.RunStatus.FAILED.value, error=exc.message
            )
            await self._decide(
                ws, state.run_id, derived_id("trial-end", state.run_id, trial.index), end
            )

    async def _end_parent(
        self, ws: str, sweep_id: str, state: sweep.SweepState, status: runs.RunStatus
    ) -> None:
        if status.terminal:
            return
        command_id = derived_id("sweep-end", sweep_id)
        command: CompleteRun | FailRun | CancelRun
        if state.status == "Completed":
            command = CompleteRun(command_id=command_id, run_id=sweep_id)
        elif state.status == "Failed":
            command = FailRun(command_id=command_id, run_id=sweep_id, error=state.error)
        else:
            command = CancelRun(command_id=command_id, run_id=sweep_id, reason=state.error)
        await self._on_run(ws, sweep_id, command_id, command)


def _sweep_view(db: sqlite3.Connection, t: Tables, ws: str, sweep_id: str) -> dict[str, Any] | None:
    row = db.execute(
        f"SELECT experiment_name, spec, seed, status, error, best_index, submitted_at, ended_at"
        f" FROM {t('sweeps')} WHERE workspace=? AND run_id=?",
        (ws, sweep_id),
    ).fetchone()
    if row is None:
        return None
    keys = "experiment_name spec seed status error best_index submitted_at ended_at".split()
    view = dict(zip(keys, row, strict=True))
    view["run_id"] = sweep_id
    view["spec"] = json.loads(view["spec"])
    stops = {
        int(r[0]): dict(
            zip(
                ("policy", "interval", "value", "reference", "threshold", "reason"),
                r[1:],
                strict=True,
            )
        )
        for r in db.execute(
            f"SELECT idx, policy, interval, value, reference, threshold, reason FROM {t('stops')}"
            " WHERE workspace=? AND sweep_id=?",
            (ws, sweep_id),
        )
    }
    trials = []
    for r in db.execute(
        f"SELECT idx, run_id, parameters, seen, status, ended, best, last, reports FROM"
        f" {t('trials')} WHERE workspace=? AND sweep_id=? ORDER BY idx",
        (ws, sweep_id),
    ):
        idx, run_id, parameters, seen, status, ended, best, last, reports = r
        trials.append(
            {
                "index": idx,
                "run_id": run_id,
                "parameters": json.loads(parameters),
                "seen": json.loads(seen),
                "status": ended or status or "Proposed",
                "best": best,
                "last": last,
                "reports": reports,
                "stopped": stops.get(idx),
            }
        )
    view["trials"] = trials
    return view
