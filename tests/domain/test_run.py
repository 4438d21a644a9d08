import pytest

from cairn.domain import run
from cairn.domain.run import RunStatus
from cairn.errors import AlreadyExists, InvalidTransition, NotFound
from cairn.proto.commands import CancelRun, CompleteRun, CreateRun, FailRun, StartRun
from cairn.proto.events import RunCreated, RunStarted, RunSubmitted, RunTagsSet
from cairn.proto.jobs import JobSpec, SubmitJob


def _created() -> run.RunState:
    return run.fold([RunCreated(run_id="r", experiment_id="e", experiment_name="e")])


def test_lifecycle() -> None:
    state = _created()
    assert state.status is RunStatus.NOT_STARTED
    (started,) = run.decide(state, StartRun(command_id="c1", run_id="r"))
    state = run.evolve(state, started)
    assert state.status is RunStatus.RUNNING
    (done,) = run.decide(state, CompleteRun(command_id="c2", run_id="r"))
    assert run.evolve(state, done).status is RunStatus.COMPLETED


def test_repeating_a_transition_is_a_no_op() -> None:
    state = run.evolve(_created(), RunStarted(run_id="r"))
    assert run.decide(state, StartRun(command_id="c", run_id="r")) == []


@pytest.mark.parametrize(
    "cmd",
    [
        StartRun(command_id="x", run_id="r"),
        FailRun(command_id="x", run_id="r", error="e"),
        CancelRun(command_id="x", run_id="r"),
    ],
)
def test_terminal_runs_stay_terminal(cmd: run.RunCommand) -> None:
    state = _created()
    for event in run.decide(state, CompleteRun(command_id="c", run_id="r")):
        state = run.evolve(state, event)
    with pytest.raises(InvalidTransition):
        run.decide(state, cmd)


def test_unknown_and_duplicate_runs() -> None:
    with pytest.raises(NotFound):
        run.decide(run.RunState(), StartRun(command_id="c", run_id="r"))
    create = CreateRun(command_id="c", run_id="r", experiment_name="e")
    with pytest.raises(AlreadyExists):
        run.decide(_created(), create)
    (event,) = run.decide(run.RunState(), create, experiment_id="e")
    assert isinstance(event, RunCreated) and event.experiment_id == "e"


def test_a_submission_creates_its_run_in_one_event_and_the_older_pair_folds_the_same() -> None:
    job = JobSpec(command=["true"])
    cmd = SubmitJob(command_id="c", run_id="r", experiment_name="exp", job=job,
                    display_name="d", tags={"k": "v"})  # fmt: skip
    (event,) = run.decide_submit(run.RunState(), cmd, experiment_id="e", job=job)
    state = run.fold([event])
    assert state.exists and state.status is RunStatus.QUEUED
    assert (state.experiment_id, state.experiment_name, state.tags) == ("e", "exp", {"k": "v"})
    older = run.fold([
        RunCreated(run_id="r", experiment_id="e", experiment_name="exp", display_name="d"),
        RunSubmitted(run_id="r", compute="local", job=job),
        RunTagsSet(run_id="r", tags={"k": "v"}),
    ])  # fmt: skip
    assert older == state
    with pytest.raises(AlreadyExists):
        run.decide_submit(state, cmd, experiment_id="e", job=job)
