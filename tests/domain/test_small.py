"""The workspace and experiment aggregates: get-or-create, as tables."""

from __future__ import annotations

import pytest

from cairn.domain import experiment, workspace
from cairn.proto.commands import CreateExperiment, CreateWorkspace
from cairn.proto.events import ExperimentCreated, WorkspaceCreated
from cairn.proto.subjects import name_to_id
from tests.domain.gwt import Case, check, ids

CREATE_WS = CreateWorkspace(command_id="c", name="ws", description="d")
WS_CREATED = WorkspaceCreated(name="ws", description="d")

WORKSPACE_CASES = [
    Case("create", [], CREATE_WS, [WS_CREATED]),
    Case("create again is a no-op", [WS_CREATED], CREATE_WS, []),
]

CREATE_EXP = CreateExperiment(command_id="c", name="my experiment")
EXP_CREATED = ExperimentCreated(experiment_id=name_to_id("my experiment"), name="my experiment")

EXPERIMENT_CASES = [
    Case("create", [], CREATE_EXP, [EXP_CREATED]),
    Case("create again is a no-op", [EXP_CREATED], CREATE_EXP, []),
]


@pytest.mark.parametrize("case", WORKSPACE_CASES, ids=ids(WORKSPACE_CASES))
def test_workspace(case: Case) -> None:
    check(workspace.AGGREGATE, case)


@pytest.mark.parametrize("case", EXPERIMENT_CASES, ids=ids(EXPERIMENT_CASES))
def test_experiment(case: Case) -> None:
    check(experiment.AGGREGATE, case)
