"""The workspace and experiment aggregates: get-or-create, and a workspace's members, as
tables."""

from __future__ import annotations

import pytest

from cairn.domain import experiment, workspace
from cairn.errors import InvalidInput, NotFound
from cairn.proto.commands import (
    ArchiveExperiment,
    CreateExperiment,
    CreateWorkspace,
    SetDefaultDatastore,
)
from cairn.proto.events import (
    DefaultDatastoreSet,
    ExperimentArchived,
    ExperimentCreated,
    ExperimentRestored,
    MemberAdded,
    MemberRemoved,
    MemberRolesChanged,
    WorkspaceCreated,
)
from cairn.proto.members import AddMember, AdoptWorkspace, RemoveMember, Role, canonical_roles
from cairn.proto.subjects import name_to_id
from tests.domain.gwt import Case, check, ids

CREATE_WS = CreateWorkspace(command_id="c", name="ws", description="d")
WS_CREATED = WorkspaceCreated(name="ws", description="d")

DS: Role = "data_scientist"
CO: Role = "compute_operator"
AUD: Role = "auditor"
ANN = MemberAdded(user="ann", roles=[DS, CO])
BEA = MemberAdded(user="bea", roles=[AUD])
CREATE_AS_ANN = workspace.CreateAsMember(command=CREATE_WS, user="ann", roles=(CO, DS, CO))


def add(user: str, *roles: Role) -> AddMember:
    return AddMember(command_id="c", user=user, roles=list(roles))


def adopt(user: str, *roles: Role) -> AdoptWorkspace:
    return AdoptWorkspace(command_id="c", user=user, roles=list(roles))


REMOVE_BEA = RemoveMember(command_id="c", user="bea")
SET_DS = SetDefaultDatastore(command_id="c", datastore="s3")

WORKSPACE_CASES = [
    Case("create", [], CREATE_WS, [WS_CREATED]),
    Case("create again is a no-op", [WS_CREATED], CREATE_WS, []),
    Case("a person who creates it is its first member", [], CREATE_AS_ANN, [WS_CREATED, ANN]),
    Case("a person creating it again changes nothing", [WS_CREATED, ANN], CREATE_AS_ANN, []),
    Case(
        "the creator needs a role",
        [],
        workspace.CreateAsMember(command=CREATE_WS, user="ann", roles=()),
        InvalidInput,
        "at least one role",
    ),
    Case("add a member", [WS_CREATED, ANN], add("bea", AUD), [BEA]),
    Case("roles are recorded once each, in one order", [WS_CREATED], add("ann", CO, DS, CO), [ANN]),
    Case("the same roles again is a no-op", [WS_CREATED, ANN], add("ann", CO, DS), []),
    Case(
        "other roles change a member's roles",
        [WS_CREATED, ANN],
        add("ann", AUD),
        [MemberRolesChanged(user="ann", roles=[AUD])],
    ),
    Case("a member of a workspace that does not exist", [], add("bea", AUD), NotFound),
    Case("remove a member", [WS_CREATED, ANN, BEA], REMOVE_BEA, [MemberRemoved(user="bea")]),
    Case(
        "remove someone who is not a member",
        [WS_CREATED, ANN],
        REMOVE_BEA,
        NotFound,
        "bea is not a member",
    ),
    Case(
        "removed, added again", [WS_CREATED, BEA, MemberRemoved(user="bea")], add("bea", AUD), [BEA]
    ),
    Case("remove from a workspace that does not exist", [], REMOVE_BEA, NotFound),
    Case("adopt a workspace that never had a member", [WS_CREATED], adopt("ann", DS, CO), [ANN]),
    Case("adopt a governed workspace is a no-op", [WS_CREATED, BEA], adopt("ann", DS, CO), []),
    Case(
        "adopt one whose members all left is a no-op",
        [WS_CREATED, BEA, MemberRemoved(user="bea")],
        adopt("ann", DS),
        [],
    ),
    Case("adopt a workspace that does not exist", [], adopt("ann", DS), NotFound),
    Case("set the default datastore", [WS_CREATED], SET_DS, [DefaultDatastoreSet(datastore="s3")]),
    Case(
        "set it to what it is is a no-op",
        [WS_CREATED, DefaultDatastoreSet(datastore="s3")],
        SET_DS,
        [],
    ),
    Case(
        "the default is workspaceblobstore",
        [WS_CREATED],
        SetDefaultDatastore(command_id="c", datastore="workspaceblobstore"),
        [],
    ),
    Case("a default of a workspace that does not exist", [], SET_DS, NotFound),
]


def test_roles_are_named_roles() -> None:
    assert canonical_roles(["auditor", "data_scientist", "auditor"]) == [DS, AUD]
    with pytest.raises(InvalidInput, match="'admin' is no role"):
        canonical_roles(["auditor", "admin"])


def test_the_members_fold() -> None:
    state = workspace.AGGREGATE.fold(
        [
            WS_CREATED,
            ANN,
            BEA,
            MemberRolesChanged(user="bea", roles=[DS]),
            MemberRemoved(user="ann"),
        ]
    )
    assert state.members == {"bea": (DS,)} and state.governed and state.exists


CREATE_EXP = CreateExperiment(command_id="c", name="my experiment")
EXP_CREATED = ExperimentCreated(experiment_id=name_to_id("my experiment"), name="my experiment")

ARCHIVE = ArchiveExperiment(command_id="c", name="my experiment")
RESTORE = ArchiveExperiment(command_id="c", name="my experiment", restore=True)

EXPERIMENT_CASES = [
    Case("create", [], CREATE_EXP, [EXP_CREATED]),
    Case("create again is a no-op", [EXP_CREATED], CREATE_EXP, []),
    Case("archive", [EXP_CREATED], ARCHIVE, [ExperimentArchived()]),
    Case("archive again is a no-op", [EXP_CREATED, ExperimentArchived()], ARCHIVE, []),
    Case("archive a missing one", [], ARCHIVE, NotFound, "no experiment 'my experiment'"),
    Case("restore", [EXP_CREATED, ExperimentArchived()], RESTORE, [ExperimentRestored()]),
    Case("restore an active one is a no-op", [EXP_CREATED], RESTORE, []),
    Case(
        "restore after restore is a no-op",
        [EXP_CREATED, ExperimentArchived(), ExperimentRestored()],
        RESTORE,
        [],
    ),
    Case("create an archived one is a no-op", [EXP_CREATED, ExperimentArchived()], CREATE_EXP, []),
]


@pytest.mark.parametrize("case", WORKSPACE_CASES, ids=ids(WORKSPACE_CASES))
def test_workspace(case: Case) -> None:
    check(workspace.AGGREGATE, case)


@pytest.mark.parametrize("case", EXPERIMENT_CASES, ids=ids(EXPERIMENT_CASES))
def test_experiment(case: Case) -> None:
    check(experiment.AGGREGATE, case)
