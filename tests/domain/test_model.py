import pytest

from cairn.domain import fold as fold_events
from cairn.domain import model
from cairn.errors import InvalidInput, NotFound
from cairn.proto.events import ModelAliasSet, ModelVersionArchived, ModelVersionRestored
from cairn.proto.registry import ArchiveModelVersion, RegisterModelVersion, SetModelAlias


def _register(state: model.ModelState) -> model.ModelState:
    cmd = RegisterModelVersion(command_id="c", name="m", path="p", run_id="r")
    (event,) = model.decide_register(state, cmd, [])
    return model.evolve(state, event)


def test_versions_count_up_and_aliases_move() -> None:
    state = model.ModelState()
    for _ in range(3):
        state = _register(state)
    assert state.latest == 3
    (moved,) = model.decide_alias(
        state, SetModelAlias(command_id="a", name="m", alias="prod", version=2)
    )
    state = model.evolve(state, moved)
    assert model.resolve(state, "m", None, "prod") == 2
    assert (
        model.decide_alias(state, SetModelAlias(command_id="a", name="m", alias="prod", version=2))
        == []
    )
    with pytest.raises(NotFound):
        model.decide_alias(state, SetModelAlias(command_id="a", name="m", alias="prod", version=9))
    with pytest.raises(InvalidInput):  # an aliased version cannot be archived
        model.decide_archive(state, ArchiveModelVersion(command_id="x", name="m", version=2))
    (archived,) = model.decide_archive(
        state, ArchiveModelVersion(command_id="x", name="m", version=3)
    )
    state = model.evolve(state, archived)
    assert model.resolve(state, "m", None, None) == 2  # latest not archived


def test_one_pass_fold_equals_folding_evolve() -> None:
    state = model.ModelState()
    events = []
    for _ in range(5):
        cmd = RegisterModelVersion(command_id="c", name="m", path="p", run_id="r")
        (ev,) = model.decide_register(state, cmd, [])
        state = model.evolve(state, ev)
        events.append(ev)
    events += [ModelAliasSet(alias="a", version=2), ModelAliasSet(alias="a", version=4),
               ModelVersionArchived(version=1), ModelVersionArchived(version=3),
               ModelVersionRestored(version=1)]  # fmt: skip
    assert model.fold(events) == fold_events(model.ModelState(), model.evolve, events)


def test_fold_continues_from_a_state() -> None:
    """The registry folds a busy model's new events onto its last state: same result."""
    events = [model.decide_register(model.ModelState(latest=v), RegisterModelVersion(
        command_id="c", name="m", path="p", run_id="r"), [])[0] for v in range(4)]  # fmt: skip
    events += [ModelAliasSet(alias="a", version=2), ModelVersionArchived(version=3)]
    start = model.fold(events[:3])
    assert model.fold(events[3:], onto=start) == model.fold(events)
    assert model.fold(events).latest == 4
