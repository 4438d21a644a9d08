"""The run aggregate: a table of decisions for every command, and its lifecycle."""

from __future__ import annotations

from typing import Literal

import pytest

from cairn.domain import run
from cairn.domain.run import RunStatus
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
from cairn.proto.jobs import ClaimJob, FinishJob, JobSpec, Outcome, ReportJob, SubmitJob
from tests.domain.gwt import Case, check, ids

R = "r"
JOB = JobSpec(command=["true"])
TWO_TRIES = JobSpec(command=["true"], max_attempts=2)

# -- given: histories --------------------------------------------------------------------------
CREATED: list[Event] = [RunCreated(run_id=R, experiment_id="e", experiment_name="e")]
RUNNING = [*CREATED, RunStarted(run_id=R)]
COMPLETED = [*RUNNING, RunCompleted(run_id=R)]
FAILED = [*RUNNING, RunFailed(run_id=R, error="boom")]
CANCELED = [*CREATED, RunCanceled(run_id=R)]
TAGGED = [*CREATED, RunTagsSet(run_id=R, tags={"k": "v"})]
WITH_PROPERTIES = [*CREATED, RunPropertiesAdded(run_id=R, properties={"p": "1"})]
WITH_FILE = [*CREATED, ArtifactCommitted(run_id=R, path="a.txt", digest="sha256:aa", size=1)]

SUBMITTED: list[Event] = [
    RunSubmitted(run_id=R, compute="local", job=JOB, experiment_id="e", experiment_name="e")
]
ASSIGNED = [*SUBMITTED, RunAssigned(run_id=R, attempt=1, queue_n=1, agent_id="a", lease_s=30.0)]
JOB_RUNNING = [*ASSIGNED, RunStarted(run_id=R, attempt=1)]
REQUEUED = [*ASSIGNED, RunRequeued(run_id=R, attempt=1, reason="lost")]
CANCEL_REQUESTED = [*JOB_RUNNING, RunCancelRequested(run_id=R, reason="stop")]
TIMED_OUT = [*JOB_RUNNING, RunCancelRequested(run_id=R, reason="timeout: ran past 5 s")]
JOB_COMPLETED = [*JOB_RUNNING, RunCompleted(run_id=R, attempt=1)]
LAST_TRY: list[Event] = [
    RunSubmitted(run_id=R, compute="local", job=TWO_TRIES, experiment_id="e"),
    RunAssigned(run_id=R, attempt=1, queue_n=1, agent_id="a", lease_s=30.0),
    RunRequeued(run_id=R, attempt=1, reason="lost"),
    RunAssigned(run_id=R, attempt=2, queue_n=2, agent_id="a", lease_s=30.0),
]

# -- when: commands ------------------------------------------------------------------------------
CREATE = run.CreateResolvedRun(
    command=CreateRun(command_id="c", run_id=R, experiment_name="exp", display_name="d"),
    experiment_id="e",
)
SUBMIT_CMD = SubmitJob(command_id="c", run_id=R, experiment_name="exp", job=JOB, tags={"k": "v"})
SUBMIT = run.SubmitResolvedJob(command=SUBMIT_CMD, experiment_id="e", job=JOB)


def start() -> StartRun:
    return StartRun(command_id="c", run_id=R)


def complete() -> CompleteRun:
    return CompleteRun(command_id="c", run_id=R)


def fail(error: str = "boom") -> FailRun:
    return FailRun(command_id="c", run_id=R, error=error)


def cancel(reason: str = "") -> CancelRun:
    return CancelRun(command_id="c", run_id=R, reason=reason)


def tags(**kv: str) -> SetRunTags:
    return SetRunTags(command_id="c", run_id=R, tags=kv)


def properties(**kv: str) -> AddRunProperties:
    return AddRunProperties(command_id="c", run_id=R, properties=kv)


def commit(path: str = "a.txt", digest: str = "sha256:aa", attempt: int = 0) -> run.CommitArtifact:
    return run.CommitArtifact(run_id=R, path=path, digest=digest, size=1, attempt=attempt)


def claim(queue_n: int = 1) -> run.AssignJob:
    command = ClaimJob(command_id="c", run_id=R, queue_n=queue_n, agent_id="a")
    return run.AssignJob(command=command, lease_s=30.0)


def report(attempt: int = 1, phase: Literal["running", "progress"] = "running") -> ReportJob:
    return ReportJob(command_id="c", run_id=R, attempt=attempt, phase=phase)


def finish(
    outcome: Outcome, attempt: int = 1, error: str = "", code: int | None = None
) -> FinishJob:
    return FinishJob(
        command_id="c", run_id=R, attempt=attempt, outcome=outcome, error=error, exit_code=code
    )


def lose(attempt: int = 1, *, stable: bool = False) -> run.LoseAttempt:
    return run.LoseAttempt(run_id=R, attempt=attempt, reason="lease expired", stable=stable)


def lost_times(n: int, *, reset_at: int | None = None) -> list[Event]:
    """A replica's history: submitted, then lost ``n`` times (the ``reset_at``-th loss after
    a stable period), and assigned again."""
    job = JobSpec(command=["true"], max_attempts=1000)
    events: list[Event] = [
        RunSubmitted(run_id=R, compute="local", job=job, experiment_id="e", experiment_name="e")
    ]
    for i in range(1, n + 1):
        events.append(RunAssigned(run_id=R, attempt=i, queue_n=i, agent_id="a", lease_s=30.0))
        events.append(RunRequeued(run_id=R, attempt=i, reason="lost", backoff_reset=i == reset_at))
    events.append(RunAssigned(run_id=R, attempt=n + 1, queue_n=n + 1, agent_id="a", lease_s=30.0))
    return events


LOST = "lost: no heartbeat for 30 s"


def silent() -> run.LoseRun:
    return run.LoseRun(run_id=R, reason=LOST)


def time_out(attempt: int = 1) -> run.TimeOutAttempt:
    return run.TimeOutAttempt(run_id=R, attempt=attempt, timeout_s=5.0)


def undeliverable(queue_n: int = 1) -> run.FailUndeliverable:
    return run.FailUndeliverable(run_id=R, queue_n=queue_n, deliveries=3)


NO_AGENT = "no agent could take the job: its ticket was delivered 3 times"

CASES = [
    # create: a run id is used once
    Case(
        "create",
        [],
        CREATE,
        [RunCreated(run_id=R, experiment_id="e", experiment_name="exp", display_name="d")],
    ),
    Case("create an existing run", CREATED, CREATE, AlreadyExists, "already exists"),
    Case("create a submitted run", SUBMITTED, CREATE, AlreadyExists),
    # interactive transitions
    Case("start", CREATED, start(), [RunStarted(run_id=R)]),
    Case("start again is a no-op", RUNNING, start(), []),
    Case("start an unknown run", [], start(), NotFound, "run r does not exist"),
    Case("start a completed run", COMPLETED, start(), InvalidTransition, "cannot become"),
    Case("complete", RUNNING, complete(), [RunCompleted(run_id=R)]),
    Case("complete again is a no-op", COMPLETED, complete(), []),
    Case("complete a failed run", FAILED, complete(), InvalidTransition),
    Case("fail", RUNNING, fail(), [RunFailed(run_id=R, error="boom")]),
    Case("fail a completed run", COMPLETED, fail(), InvalidTransition),
    Case("fail an unknown run", [], fail(), NotFound),
    Case("cancel", CREATED, cancel("why"), [RunCanceled(run_id=R, reason="why")]),
    Case("cancel again is a no-op", CANCELED, cancel(), []),
    Case("cancel a completed run", COMPLETED, cancel(), InvalidTransition),
    Case("a job is started by its agent", ASSIGNED, start(), InvalidTransition, "is a job"),
    Case("a job is completed by its agent", JOB_RUNNING, complete(), InvalidTransition),
    Case("an ended job stays ended", JOB_COMPLETED, fail(), InvalidTransition),
    # cancel of a job: asked of its agent while one holds it
    Case("cancel a queued job", SUBMITTED, cancel("why"), [RunCanceled(run_id=R, reason="why")]),
    Case(
        "cancel a held job",
        JOB_RUNNING,
        cancel(),
        [RunCancelRequested(run_id=R, reason="canceled")],
    ),
    Case("cancel a job asked to stop", CANCEL_REQUESTED, cancel(), []),
    Case("cancel a completed job", JOB_COMPLETED, cancel(), InvalidTransition, "cannot be"),
    Case("cancel a canceled job", [*SUBMITTED, RunCanceled(run_id=R)], cancel(), []),
    # a silent interactive run: failed once, only while Running, never a job
    Case("lose a silent run", RUNNING, silent(), [RunFailed(run_id=R, error=LOST)]),
    Case("lose a run that completed", COMPLETED, silent(), []),
    Case("lose a run that failed", FAILED, silent(), []),
    Case("lose a run not started", CREATED, silent(), []),
    Case("lose an unknown run", [], silent(), []),
    Case("a job is left to its agent", JOB_RUNNING, silent(), []),
    # tags and properties
    Case(
        "tags: only the changed ones",
        TAGGED,
        tags(k="v", n="1"),
        [RunTagsSet(run_id=R, tags={"n": "1"})],
    ),
    Case("tags unchanged is a no-op", TAGGED, tags(k="v"), []),
    Case("tags on a job", JOB_COMPLETED, tags(k="v"), [RunTagsSet(run_id=R, tags={"k": "v"})]),
    Case("tags of an unknown run", [], tags(k="v"), NotFound),
    Case(
        "properties: only the new ones",
        WITH_PROPERTIES,
        properties(p="1", q="2"),
        [RunPropertiesAdded(run_id=R, properties={"q": "2"})],
    ),
    Case("properties again is a no-op", WITH_PROPERTIES, properties(p="1"), []),
    Case("properties are write-once", WITH_PROPERTIES, properties(p="2"), AlreadyExists, "p"),
    # commit: run files are write-once
    Case(
        "commit",
        CREATED,
        commit(),
        [ArtifactCommitted(run_id=R, path="a.txt", digest="sha256:aa", size=1)],
    ),
    Case("commit the same bytes again is a no-op", WITH_FILE, commit(), []),
    Case("commit other bytes at a path", WITH_FILE, commit(digest="sha256:bb"), AlreadyExists),
    Case("commit to an unknown run", [], commit(), NotFound),
    Case(
        "commit from the current attempt",
        JOB_RUNNING,
        commit(attempt=1),
        [ArtifactCommitted(run_id=R, path="a.txt", digest="sha256:aa", size=1)],
    ),
    Case("commit from a replaced attempt", REQUEUED, commit(attempt=1), StaleAttempt),
    Case("commit from an ended attempt", JOB_COMPLETED, commit(attempt=1), StaleAttempt),
    # submit: one event creates and queues the run
    Case(
        "submit",
        [],
        SUBMIT,
        [
            RunSubmitted(
                run_id=R,
                compute="local",
                job=JOB,
                experiment_id="e",
                experiment_name="exp",
                tags={"k": "v"},
            )
        ],
    ),
    Case("submit an existing run", CREATED, SUBMIT, AlreadyExists),
    Case("submit again", SUBMITTED, SUBMIT, AlreadyExists),
    # claim: a ticket is good only while the run waits under its queue number
    Case(
        "claim",
        SUBMITTED,
        claim(),
        [RunAssigned(run_id=R, attempt=1, queue_n=1, agent_id="a", lease_s=30.0)],
    ),
    Case(
        "claim after a requeue",
        REQUEUED,
        claim(queue_n=2),
        [RunAssigned(run_id=R, attempt=2, queue_n=2, agent_id="a", lease_s=30.0)],
    ),
    Case("claim a leftover ticket", REQUEUED, claim(queue_n=1), StaleAttempt, "ticket 1"),
    Case("claim a claimed run", ASSIGNED, claim(), StaleAttempt),
    Case("claim an unknown run", [], claim(), NotFound),
    Case("claim a run that is not a job", CREATED, claim(), InvalidTransition, "not a job"),
    # report: fenced by attempt; the first "running" records the start
    Case("report running", ASSIGNED, report(), [RunStarted(run_id=R, attempt=1)]),
    Case("report running again", JOB_RUNNING, report(), []),
    Case("report progress", JOB_RUNNING, report(phase="progress"), []),
    Case("report from an old attempt", REQUEUED, report(), StaleAttempt, "not current"),
    Case("report on a queued run", SUBMITTED, report(), StaleAttempt),
    Case("report on an unknown run", [], report(), NotFound),
    # finish
    Case("finish completed", JOB_RUNNING, finish("completed"), [RunCompleted(run_id=R, attempt=1)]),
    Case(
        "finish failed",
        JOB_RUNNING,
        finish("failed", error="bad", code=3),
        [RunFailed(run_id=R, attempt=1, error="bad", exit_code=3)],
    ),
    Case(
        "finish canceled",
        CANCEL_REQUESTED,
        finish("canceled", code=-15),
        [RunCanceled(run_id=R, attempt=1, reason="stop")],
    ),
    Case(
        "finish canceled by a timeout fails",
        TIMED_OUT,
        finish("canceled", code=-15),
        [RunFailed(run_id=R, attempt=1, error="timeout: ran past 5 s", exit_code=-15)],
    ),
    Case(
        "finish lost requeues",
        JOB_RUNNING,
        finish("lost", error="no disk"),
        [RunRequeued(run_id=R, attempt=1, reason="no disk")],
    ),
    Case("finish from an old attempt", REQUEUED, finish("completed"), StaleAttempt),
    Case("finish an ended run", JOB_COMPLETED, finish("completed"), StaleAttempt),
    # lost: requeue while the budget lasts
    Case(
        "lose",
        JOB_RUNNING,
        lose(),
        [RunRequeued(run_id=R, attempt=1, reason="lease expired", delay_s=0.0)],
    ),
    Case(
        "lose again backs off",
        [*REQUEUED, RunAssigned(run_id=R, attempt=2, queue_n=2, agent_id="a", lease_s=30.0)],
        lose(attempt=2),
        [RunRequeued(run_id=R, attempt=2, reason="lease expired", delay_s=2.0)],
    ),
    Case(
        "lose the last try fails",
        LAST_TRY,
        lose(attempt=2),
        [
            RunFailed(
                run_id=R, attempt=2, error="gave up after 2 lost attempts; the last: lease expired"
            )
        ],
    ),
    Case(
        "lose a run asked to stop cancels it",
        CANCEL_REQUESTED,
        lose(),
        [RunCanceled(run_id=R, attempt=1, reason="stop")],
    ),
    Case(
        "lose a run timed out fails it",
        TIMED_OUT,
        lose(),
        [RunFailed(run_id=R, attempt=1, error="timeout: ran past 5 s")],
    ),
    Case("lose an old attempt is a no-op", REQUEUED, lose(), []),
    # a replica's back-off grows with losses in a row, and starts over after a stable period
    Case(
        "losses in a row back off to the longest delay",
        lost_times(6),
        lose(attempt=7),
        [RunRequeued(run_id=R, attempt=7, reason="lease expired", delay_s=120.0)],
    ),
    Case(
        "a loss after a stable period is re-queued at once",
        lost_times(6),
        lose(attempt=7, stable=True),
        [RunRequeued(run_id=R, attempt=7, reason="lease expired", delay_s=0.0, backoff_reset=True)],
    ),
    Case(
        "after a reset the back-off grows again from its start",
        lost_times(6, reset_at=6),
        lose(attempt=7),
        [RunRequeued(run_id=R, attempt=7, reason="lease expired", delay_s=2.0)],
    ),
    Case(
        "an agent's lost report after a stable period is re-queued at once",
        [*lost_times(6), RunStarted(run_id=R, attempt=7)],
        run.FinishStableJob(command=finish("lost", attempt=7, error="exited"), stable=True),
        [RunRequeued(run_id=R, attempt=7, reason="exited", delay_s=0.0, backoff_reset=True)],
    ),
    Case("lose an ended run is a no-op", JOB_COMPLETED, lose(), []),
    Case("lose a run that is not a job is a no-op", RUNNING, lose(), []),
    # timeout: ask the agent to stop
    Case(
        "time out",
        JOB_RUNNING,
        time_out(),
        [RunCancelRequested(run_id=R, reason="timeout: ran past 5 s")],
    ),
    Case(
        "time out while preparing",
        ASSIGNED,
        time_out(),
        [RunCancelRequested(run_id=R, reason="timeout: ran past 5 s")],
    ),
    Case("time out again is a no-op", TIMED_OUT, time_out(), []),
    Case("time out an old attempt is a no-op", JOB_RUNNING, time_out(attempt=2), []),
    Case("time out an ended run is a no-op", JOB_COMPLETED, time_out(), []),
    # undeliverable ticket: the run fails
    Case(
        "undeliverable",
        SUBMITTED,
        undeliverable(),
        [RunFailed(run_id=R, attempt=0, error=NO_AGENT)],
    ),
    Case("undeliverable leftover ticket", REQUEUED, undeliverable(queue_n=1), []),
    Case("undeliverable after a claim", ASSIGNED, undeliverable(), []),
    Case("undeliverable of a run that is not a job", CREATED, undeliverable(), []),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(run.AGGREGATE, case)


STAGING_CASES = [
    Case(
        "commit to a new staging area",
        [],
        commit(),
        [ArtifactCommitted(run_id=R, path="a.txt", digest="sha256:aa", size=1)],
    ),
    Case("commit the same snapshot again", WITH_FILE[1:], commit(), []),
    Case("commit other bytes", WITH_FILE[1:], commit(digest="sha256:bb"), AlreadyExists),
]


@pytest.mark.parametrize("case", STAGING_CASES, ids=ids(STAGING_CASES))
def test_decide_staging(case: Case) -> None:
    check(run.STAGING, case)


def test_lifecycle() -> None:
    state = run.AGGREGATE.fold(CREATED)
    assert state.status is RunStatus.NOT_STARTED
    (started,) = run.decide(state, start())
    state = run.evolve(state, started)
    assert state.status is RunStatus.RUNNING
    (done,) = run.decide(state, complete())
    assert run.evolve(state, done).status is RunStatus.COMPLETED


def test_a_submission_creates_its_run_in_one_event_and_the_older_pair_folds_the_same() -> None:
    job = JobSpec(command=["true"])
    cmd = SubmitJob(
        command_id="c",
        run_id="r",
        experiment_name="exp",
        job=job,
        display_name="d",
        tags={"k": "v"},
    )
    (event,) = run.decide(
        run.RunState(), run.SubmitResolvedJob(command=cmd, experiment_id="e", job=job)
    )
    state = run.AGGREGATE.fold([event])
    assert state.exists and state.status is RunStatus.QUEUED
    assert (state.experiment_id, state.experiment_name, state.tags) == ("e", "exp", {"k": "v"})
    older = run.AGGREGATE.fold(
        [
            RunCreated(run_id="r", experiment_id="e", experiment_name="exp", display_name="d"),
            RunSubmitted(run_id="r", compute="local", job=job),
            RunTagsSet(run_id="r", tags={"k": "v"}),
        ]
    )
    assert older == state
