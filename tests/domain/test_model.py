"""The model aggregate: a table of decisions, and its one-pass fold."""

from __future__ import annotations

import pytest

from cairn.domain import fold as fold_events
from cairn.domain import model
from cairn.errors import InvalidInput, NotFound
from cairn.proto.events import (
    Event,
    ModelAliasSet,
    ModelFile,
    ModelVersionArchived,
    ModelVersionRegistered,
    ModelVersionRestored,
)
from cairn.proto.registry import ArchiveModelVersion, RegisterModelVersion, SetModelAlias
from tests.domain.gwt import Case, check, ids

FILES = [ModelFile(path="model.pkl", digest="sha256:aa", size=1)]


def version(n: int) -> ModelVersionRegistered:
    return ModelVersionRegistered(
        name="m", version=n, files=FILES, source_run_id="r", source_path="model.pkl"
    )


def register(
    datasets: list[str] | None = None, environment: str | None = None
) -> model.RegisterResolvedModel:
    cmd = RegisterModelVersion(command_id="c", name="m", path="model.pkl", run_id="r")
    return model.RegisterResolvedModel(
        command=cmd, files=FILES, datasets=datasets or [], environment=environment
    )


def alias(alias: str, version: int) -> SetModelAlias:
    return SetModelAlias(command_id="c", name="m", alias=alias, version=version)


def archive(version: int, restore: bool = False) -> ArchiveModelVersion:
    return ArchiveModelVersion(command_id="c", name="m", version=version, restore=restore)


TWO: list[Event] = [version(1), version(2)]
PROD_2 = [*TWO, ModelAliasSet(alias="prod", version=2)]
ARCHIVED_1 = [*TWO, ModelVersionArchived(version=1)]

CASES = [
    Case("register the first version", [], register(), [version(1)]),
    Case("register the next version", TWO, register(), [version(3)]),
    Case(
        "register with the source run's lineage",
        [],
        register(datasets=["d:1"], environment="env:2"),
        [
            ModelVersionRegistered(
                name="m",
                version=1,
                files=FILES,
                source_run_id="r",
                source_path="model.pkl",
                datasets=["d:1"],
                environment="env:2",
            )
        ],
    ),
    Case("alias", TWO, alias("prod", 2), [ModelAliasSet(alias="prod", version=2)]),
    Case("alias moves", PROD_2, alias("prod", 1), [ModelAliasSet(alias="prod", version=1)]),
    Case("alias again is a no-op", PROD_2, alias("prod", 2), []),
    Case("alias a missing version", TWO, alias("prod", 9), NotFound, "no version 9"),
    Case("alias an archived version", ARCHIVED_1, alias("prod", 1), InvalidInput, "archived"),
    Case("archive", TWO, archive(1), [ModelVersionArchived(version=1)]),
    Case("archive again is a no-op", ARCHIVED_1, archive(1), []),
    Case("archive an aliased version", PROD_2, archive(2), InvalidInput, "alias"),
    Case("archive a missing version", [], archive(1), NotFound),
    Case("restore", ARCHIVED_1, archive(1, restore=True), [ModelVersionRestored(version=1)]),
    Case("restore a live version is a no-op", TWO, archive(1, restore=True), []),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(model.AGGREGATE, case)


def test_resolve_by_number_alias_or_latest_live() -> None:
    state = model.AGGREGATE.fold([*PROD_2, version(3), ModelVersionArchived(version=3)])
    assert model.resolve(state, "m", 1, None) == 1
    assert model.resolve(state, "m", None, "prod") == 2
    assert model.resolve(state, "m", None, None) == 2  # latest not archived
    with pytest.raises(NotFound):
        model.resolve(state, "m", None, "dev")
    with pytest.raises(NotFound):
        model.resolve(model.ModelState(), "m", None, None)


EVENTS: list[Event] = [
    *(version(n) for n in range(1, 6)),
    ModelAliasSet(alias="a", version=2),
    ModelAliasSet(alias="a", version=4),
    ModelVersionArchived(version=1),
    ModelVersionArchived(version=3),
    ModelVersionRestored(version=1),
]


def test_one_pass_fold_equals_folding_evolve() -> None:
    assert model.AGGREGATE.fold(EVENTS) == fold_events(model.ModelState(), model.evolve, EVENTS)


def test_fold_continues_from_a_state() -> None:
    """The bus folds a busy model's new events onto its last state: same result."""
    start = model.AGGREGATE.fold(EVENTS[:3])
    assert model.AGGREGATE.fold(EVENTS[3:], onto=start) == model.AGGREGATE.fold(EVENTS)
    assert model.AGGREGATE.fold(EVENTS).latest == 5


def test_alias_moves_say_from_which_version_each_alias_moved() -> None:
    history: list[Event] = [
        *TWO,
        ModelAliasSet(alias="prod", version=1),
        ModelAliasSet(alias="staging", version=2),
        version(3),
        ModelAliasSet(alias="prod", version=3),
        ModelAliasSet(alias="staging", version=1),
    ]
    moves = [(m.index, m.alias, m.previous, m.version) for m in model.alias_moves(history)]
    assert moves == [
        (2, "prod", None, 1),
        (3, "staging", None, 2),
        (5, "prod", 1, 3),
        (6, "staging", 2, 1),
    ]
    assert model.alias_moves(TWO) == []
