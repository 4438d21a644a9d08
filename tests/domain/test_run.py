import pytest

from cairn.domain import run
from cairn.domain.run import RunStatus
from cairn.errors import AlreadyExists, InvalidTransition, NotFound
from cairn.proto.commands import CancelRun, CompleteRun, CreateRun, FailRun, StartRun
from cairn.proto.events import RunCreated, RunStarted


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
