"""The run aggregate.

A run logged interactively goes NotStarted -> Running -> Completed | Failed | Canceled.
A job goes NotStarted -> Queued -> Preparing (assigned to an agent, attempt n) -> Running ->
Completed | Failed | Canceled, back to Queued when its attempt is lost, and through
CancelRequested when it is canceled while an agent holds it.

Repeating a transition into the state a run is already in is a no-op, so a client that lost a
reply can send the command again under a new id; leaving a terminal state is refused. Reports
from job attempts are fenced by attempt number: only the current attempt may move the run.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, InvalidTransition, NotFound, StaleAttempt
from cairn.proto.commands import (
    AddRunProperties,
    CancelRun,
    CompleteRun,
    CreateRun,
    FailRun,
    SetRunTags,
    StartRun,
)
from cairn.proto.events import (
    ArtifactCommitted,
    Event,
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
)
from cairn.proto.jobs import ClaimJob, FinishJob, JobSpec, ReportJob, ScheduledBy, SubmitJob

__all__ = [
    "AGGREGATE",
    "KIND",
    "REQUEUE_BACKOFF_S",
    "STAGING",
    "AssignJob",
    "CommitArtifact",
    "CreateResolvedRun",
    "FailUndeliverable",
    "FinishStableJob",
    "LoseAttempt",
    "LoseRun",
    "RunCommand",
    "RunState",
    "RunStatus",
    "StagingCommand",
    "SubmitResolvedJob",
    "TimeOutAttempt",
    "decide",
    "decide_staging",
    "evolve",
]

KIND = "run"


class RunStatus(StrEnum):
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    RUNNING = "Running"
    CANCEL_REQUESTED = "CancelRequested"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)

    @property
    def held(self) -> bool:
        """An agent holds the run (its current attempt)."""
        return self in (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED)


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    run_id: str = ""
    experiment_id: str = ""
    experiment_name: str = ""
    status: RunStatus = RunStatus.NOT_STARTED
    error: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    properties: dict[str, str] = msgspec.field(default_factory=dict)
    files: dict[str, str] = msgspec.field(default_factory=dict)
    # -- jobs --
    compute: str = ""
    job: JobSpec | None = None
    queue_n: int = 0
    attempt: int = 0
    agent_id: str = ""
    lease_s: float = 0.0
    lost: int = 0
    #: losses since the back-off last started over (what the next re-queue's delay and the
    #: attempt budget count)
    streak: int = 0
    started: bool = False
    cancel_reason: str = ""
    #: the schedule fire that submitted it
    scheduled: ScheduledBy | None = None


def evolve(state: RunState, event: Event) -> RunState:
    match event:
        case RunCreated(run_id=run_id, experiment_id=experiment_id, experiment_name=name):
            return RunState(
                exists=True, run_id=run_id, experiment_id=experiment_id, experiment_name=name
            )
        case RunStarted():
            status = (
                state.status if state.status == RunStatus.CANCEL_REQUESTED else RunStatus.RUNNING
            )
            return msgspec.structs.replace(state, status=status, started=True)
        case RunSubmitted() as ev:
            return _submitted(state, ev)
        case RunAssigned(attempt=attempt, agent_id=agent_id, lease_s=lease_s):
            return msgspec.structs.replace(
                state,
                status=RunStatus.PREPARING,
                attempt=attempt,
                agent_id=agent_id,
                lease_s=lease_s,
                started=False,
            )
        case RunRequeued(backoff_reset=reset):
            return msgspec.structs.replace(
                state,
                status=RunStatus.QUEUED,
                agent_id="",
                queue_n=state.queue_n + 1,
                lost=state.lost + 1,
                streak=1 if reset else state.streak + 1,
            )
        case RunCancelRequested(reason=reason):
            return msgspec.structs.replace(
                state, status=RunStatus.CANCEL_REQUESTED, cancel_reason=reason
            )
        case RunCompleted():
            return msgspec.structs.replace(state, status=RunStatus.COMPLETED)
        case RunFailed(error=error):
            return msgspec.structs.replace(state, status=RunStatus.FAILED, error=error)
        case RunCanceled():
            return msgspec.structs.replace(state, status=RunStatus.CANCELED)
        case RunTagsSet(tags=tags):
            return msgspec.structs.replace(state, tags={**state.tags, **tags})
        case RunPropertiesAdded(properties=properties):
            return msgspec.structs.replace(state, properties={**state.properties, **properties})
        case ArtifactCommitted(path=path, digest=digest):
            return msgspec.structs.replace(state, files={**state.files, path: digest})
    return state


def _submitted(state: RunState, ev: RunSubmitted) -> RunState:
    if ev.experiment_id is not None:  # the submission created the run
        state = RunState(
            exists=True,
            run_id=ev.run_id,
            experiment_id=ev.experiment_id,
            experiment_name=ev.experiment_name or "",
            tags=dict(ev.tags),
        )
    return msgspec.structs.replace(
        state,
        status=RunStatus.QUEUED,
        compute=ev.compute,
        job=ev.job,
        queue_n=1,
        scheduled=ev.scheduled,
    )


# -- commands the services decide on their own -------------------------------------------------
# Whatever a decision needs from I/O or the clock (a resolved id, a lease length, a timeout) is a
# field of its command, so ``decide`` stays pure. These never travel on the wire.


class CreateResolvedRun(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``CreateRun`` with the id of its experiment, which the caller looked up (and checked
    that it and any parent run exist)."""

    command: CreateRun
    experiment_id: str
    #: the process manager that drives the run (a sweep's parent run: ``sweep``)
    controller: str | None = None


class SubmitResolvedJob(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``SubmitJob`` with its experiment's id and its job spec with the environment resolved."""

    command: SubmitJob
    experiment_id: str
    job: JobSpec


class AssignJob(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An agent's ``ClaimJob``, with the lease the scheduler grants."""

    command: ClaimJob
    lease_s: float


class CommitArtifact(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Record a run file the artifact service stored. ``attempt`` (0: none) is the job attempt
    that uploaded it: refused once that attempt is not the run's current one."""

    run_id: str
    path: str
    digest: str
    size: int
    attempt: int = 0


class LoseAttempt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Attempt ``attempt`` is lost (its lease expired). ``stable``: it had run (a serving
    replica: been ready) for a stable period first, as the scheduler saw it: its back-off
    starts over."""

    run_id: str
    attempt: int
    reason: str
    stable: bool = False


class FinishStableJob(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An agent's ``FinishJob`` with what the scheduler saw: ``stable``, the attempt had run
    (a serving replica: been ready) for a stable period, so a loss starts its back-off
    over."""

    command: FinishJob
    stable: bool = False


class LoseRun(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An interactive run's process stopped beating (the tracking service's decision): fail
    it with ``reason`` if it is still Running; a run that ended, or a job (its agent's
    business), is left as it is."""

    run_id: str
    reason: str


class TimeOutAttempt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Attempt ``attempt`` ran past the job's ``timeout_s``."""

    run_id: str
    attempt: int
    timeout_s: float


class FailUndeliverable(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """JetStream gave up delivering ticket ``queue_n`` after ``deliveries`` deliveries."""

    run_id: str
    queue_n: int
    deliveries: int


_Interactive = StartRun | CompleteRun | FailRun | CancelRun | SetRunTags | AddRunProperties

RunCommand = (
    CreateResolvedRun
    | StartRun
    | CompleteRun
    | FailRun
    | CancelRun
    | SetRunTags
    | AddRunProperties
    | CommitArtifact
    | SubmitResolvedJob
    | AssignJob
    | ReportJob
    | FinishJob
    | FinishStableJob
    | LoseAttempt
    | LoseRun
    | TimeOutAttempt
    | FailUndeliverable
)


def decide(state: RunState, command: RunCommand) -> list[Event]:
    match command:
        case CreateResolvedRun():
            return _create(state, command)
        case SubmitResolvedJob():
            return _submit(state, command)
        case CommitArtifact():
            return _commit_attempt(state, command)
        case AssignJob():
            return _claim(state, command.command, command.lease_s)
        case ReportJob():
            return _report(state, command)
        case FinishJob():
            return _finish(state, command)
        case FinishStableJob(command=finish, stable=stable):
            return _finish(state, finish, stable=stable)
        case LoseAttempt(attempt=attempt, reason=reason, stable=stable):
            return _lost(state, attempt, reason, stable=stable)
        case LoseRun(reason=reason):
            return _silent(state, reason)
        case TimeOutAttempt(attempt=attempt, timeout_s=timeout_s):
            return _timeout(state, attempt, timeout_s)
        case FailUndeliverable(queue_n=queue_n, deliveries=deliveries):
            return _undeliverable(state, queue_n, deliveries)
        case _:
            return _interactive(state, command)


def _create(state: RunState, command: CreateResolvedRun) -> list[Event]:
    create = command.command
    if state.exists:
        raise AlreadyExists(f"run {create.run_id} already exists")
    return [
        RunCreated(
            run_id=create.run_id,
            experiment_id=command.experiment_id,
            experiment_name=create.experiment_name,
            display_name=create.display_name,
            parent_run_id=create.parent_run_id,
            controller=command.controller,
        )
    ]


def _interactive(state: RunState, command: _Interactive) -> list[Event]:
    if not state.exists:
        raise NotFound(f"run {command.run_id} does not exist")
    if state.job is not None and not isinstance(command, (SetRunTags, AddRunProperties)):
        if isinstance(command, CancelRun):
            return _cancel(state, command.reason)
        if not state.status.terminal:
            raise InvalidTransition(f"run {state.run_id} is a job; its agent starts and ends it")
    match command:
        case SetRunTags(tags=tags):
            changed = {k: v for k, v in tags.items() if state.tags.get(k) != v}
            return [RunTagsSet(run_id=state.run_id, tags=changed)] if changed else []
        case AddRunProperties(properties=properties):
            return _add_properties(state, properties)
        case StartRun(run_id=run_id):
            return _transition(state, RunStatus.RUNNING, RunStarted(run_id=run_id))
        case CompleteRun(run_id=run_id):
            return _transition(state, RunStatus.COMPLETED, RunCompleted(run_id=run_id))
        case FailRun(run_id=run_id, error=error):
            return _transition(state, RunStatus.FAILED, RunFailed(run_id=run_id, error=error))
        case CancelRun(run_id=run_id, reason=reason):
            return _transition(state, RunStatus.CANCELED, RunCanceled(run_id=run_id, reason=reason))


def _transition(state: RunState, target: RunStatus, event: Event) -> list[Event]:
    if state.status == target:
        return []
    if state.status.terminal:
        raise InvalidTransition(f"run {state.run_id} is {state.status}; cannot become {target}")
    return [event]


def _add_properties(state: RunState, properties: dict[str, str]) -> list[Event]:
    clash = sorted(k for k, v in properties.items() if state.properties.get(k, v) != v)
    if clash:
        raise AlreadyExists(f"run {state.run_id} properties are write-once: {', '.join(clash)}")
    new = {k: v for k, v in properties.items() if k not in state.properties}
    return [RunPropertiesAdded(run_id=state.run_id, properties=new)] if new else []


def _commit_attempt(state: RunState, command: CommitArtifact) -> list[Event]:
    attempt = command.attempt
    if attempt and (attempt != state.attempt or not state.status.held):
        raise StaleAttempt(f"attempt {attempt} of run {command.run_id} is stale")
    return _commit(state, command)


def _commit(state: RunState, command: CommitArtifact) -> list[Event]:
    """Record a run file. The same bytes at the same path again is a no-op; other bytes at a
    path that exists are refused (run files are write-once, as in Azure ML)."""
    if not state.exists:
        raise NotFound(f"run {state.run_id or '?'} does not exist")
    path, digest = command.path, command.digest
    existing = state.files.get(path)
    if existing == digest:
        return []
    if existing is not None:
        raise AlreadyExists(f"run {state.run_id} already has a different file at {path!r}")
    return [ArtifactCommitted(run_id=state.run_id, path=path, digest=digest, size=command.size)]


# -- jobs ------------------------------------------------------------------------------------


def _submit(state: RunState, command: SubmitResolvedJob) -> list[Event]:
    submit = command.command
    if state.exists:
        raise AlreadyExists(f"run {submit.run_id} already exists")
    submitted = RunSubmitted(
        run_id=submit.run_id,
        compute=submit.compute,
        job=command.job,
        experiment_id=command.experiment_id,
        experiment_name=submit.experiment_name,
        display_name=submit.display_name,
        tags=submit.tags,
        scheduled=submit.scheduled,
        parent_run_id=submit.parent_run_id,
    )
    return [submitted]


def _require_job(state: RunState, run_id: str) -> JobSpec:
    if not state.exists:
        raise NotFound(f"run {run_id} does not exist")
    if state.job is None:
        raise InvalidTransition(f"run {run_id} is not a job")
    return state.job


def _claim(state: RunState, command: ClaimJob, lease_s: float) -> list[Event]:
    """A ticket is good only while the run waits under that queue number; anything else is a
    leftover (a redelivered or duplicated ticket, a run canceled or re-queued since)."""
    _require_job(state, command.run_id)
    if state.status != RunStatus.QUEUED or command.queue_n != state.queue_n:
        raise StaleAttempt(
            f"ticket {command.queue_n} of run {state.run_id} is stale (run is {state.status},"
            f" queue number {state.queue_n})"
        )
    assigned = RunAssigned(
        run_id=state.run_id,
        attempt=state.attempt + 1,
        queue_n=state.queue_n,
        agent_id=command.agent_id,
        lease_s=lease_s,
    )
    return [assigned]


def _require_current(state: RunState, run_id: str, attempt: int) -> None:
    _require_job(state, run_id)
    if attempt != state.attempt or not state.status.held:
        raise StaleAttempt(
            f"attempt {attempt} of run {run_id} is not current (run is {state.status},"
            f" attempt {state.attempt})"
        )


def _report(state: RunState, command: ReportJob) -> list[Event]:
    _require_current(state, command.run_id, command.attempt)
    if command.phase == "running" and not state.started:
        return [RunStarted(run_id=state.run_id, attempt=command.attempt)]
    return []


def _finish(state: RunState, command: FinishJob, *, stable: bool = False) -> list[Event]:
    _require_current(state, command.run_id, command.attempt)
    run_id, attempt, exit_code = state.run_id, command.attempt, command.exit_code
    match command.outcome:
        case "completed":
            return [RunCompleted(run_id=run_id, attempt=attempt)]
        case "failed":
            return [
                RunFailed(run_id=run_id, attempt=attempt, error=command.error, exit_code=exit_code)
            ]
        case "canceled":
            reason = state.cancel_reason
            if reason.startswith("timeout"):
                return [
                    RunFailed(run_id=run_id, attempt=attempt, error=reason, exit_code=exit_code)
                ]
            return [RunCanceled(run_id=run_id, attempt=attempt, reason=reason)]
    return _lost(state, attempt, command.error or "the agent could not run the job", stable=stable)


#: seconds to wait before the n-th re-queue of a run (infrastructure failures)
REQUEUE_BACKOFF_S = (0.0, 2.0, 10.0, 30.0, 120.0)


def _lost(state: RunState, attempt: int, reason: str, *, stable: bool = False) -> list[Event]:
    """Attempt ``attempt`` is lost (lease expired, agent failure): re-queue it while the budget
    lasts, else fail the run. A run whose cancel was requested is canceled instead. The delay
    and the budget count the losses in a row: an attempt that ran for a stable period
    (``stable``) starts them over, as Kubernetes resets a container's crash-loop back-off."""
    if state.job is None or attempt != state.attempt or not state.status.held:
        return []
    if state.status == RunStatus.CANCEL_REQUESTED:
        if state.cancel_reason.startswith("timeout"):
            return [RunFailed(run_id=state.run_id, attempt=attempt, error=state.cancel_reason)]
        return [RunCanceled(run_id=state.run_id, attempt=attempt, reason=state.cancel_reason)]
    streak = 0 if stable else state.streak
    if streak + 1 >= state.job.max_attempts:
        error = f"gave up after {streak + 1} lost attempts; the last: {reason}"
        return [RunFailed(run_id=state.run_id, attempt=attempt, error=error)]
    delay = REQUEUE_BACKOFF_S[min(streak, len(REQUEUE_BACKOFF_S) - 1)]
    return [
        RunRequeued(
            run_id=state.run_id,
            attempt=attempt,
            reason=reason,
            delay_s=delay,
            backoff_reset=stable,
        )
    ]


def _silent(state: RunState, reason: str) -> list[Event]:
    """An interactive run whose process is gone: failed, once, and only while Running."""
    if not state.exists or state.job is not None or state.status != RunStatus.RUNNING:
        return []
    return [RunFailed(run_id=state.run_id, error=reason)]


def _cancel(state: RunState, reason: str) -> list[Event]:
    if state.status.terminal:
        if state.status == RunStatus.CANCELED:
            return []
        raise InvalidTransition(f"run {state.run_id} is {state.status}; cannot be canceled")
    if state.status.held:
        if state.status == RunStatus.CANCEL_REQUESTED:
            return []
        return [RunCancelRequested(run_id=state.run_id, reason=reason or "canceled")]
    return [RunCanceled(run_id=state.run_id, reason=reason)]


def _timeout(state: RunState, attempt: int, timeout_s: float) -> list[Event]:
    if attempt != state.attempt or state.status not in (RunStatus.PREPARING, RunStatus.RUNNING):
        return []
    return [RunCancelRequested(run_id=state.run_id, reason=f"timeout: ran past {timeout_s:g} s")]


def _undeliverable(state: RunState, queue_n: int, deliveries: int) -> list[Event]:
    """JetStream gave up delivering the run's ticket (its agents failed before claiming)."""
    if state.job is None or state.status != RunStatus.QUEUED or queue_n != state.queue_n:
        return []
    error = f"no agent could take the job: its ticket was delivered {deliveries} times"
    return [RunFailed(run_id=state.run_id, attempt=state.attempt, error=error)]


AGGREGATE: Aggregate[RunState, RunCommand] = Aggregate(
    kind=KIND, initial=RunState(), evolve=evolve, decide=decide, commands=RunCommand
)

# -- staging areas ---------------------------------------------------------------------------
# Files a client uploads before it submits a job or registers a model (a job's snapshot). An
# area is folded as a run and exists once something is put in it.

StagingCommand = CommitArtifact


def decide_staging(state: RunState, command: StagingCommand) -> list[Event]:
    match command:
        case CommitArtifact(run_id=area):
            return _commit(msgspec.structs.replace(state, exists=True, run_id=area), command)


STAGING: Aggregate[RunState, StagingCommand] = Aggregate(
    kind="staging",
    initial=RunState(),
    evolve=evolve,
    decide=decide_staging,
    commands=StagingCommand,
)
