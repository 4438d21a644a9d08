"""Batch endpoints: created once, deployments added or replaced, the first the default."""

from __future__ import annotations

import pytest

from cairn.domain import batch
from cairn.errors import AlreadyExists, NotFound
from cairn.proto.batch import BatchDeploymentSpec, CreateBatchEndpoint, SetBatchDeployment
from cairn.proto.events import BatchDeploymentSet, BatchEndpointCreated
from cairn.proto.jobs import JobSpec
from tests.domain.gwt import Case, check, ids

SPEC = BatchDeploymentSpec(job=JobSpec(command=[]), scoring_script="score.py")
OTHER = BatchDeploymentSpec(job=JobSpec(command=[]), scoring_script="other.py")
CREATE = CreateBatchEndpoint(command_id="c", name="scorer", description="d")
CREATED = BatchEndpointCreated(name="scorer", description="d")


def deploy(
    name: str = "v1", spec: BatchDeploymentSpec = SPEC, default: bool = False
) -> SetBatchDeployment:
    return SetBatchDeployment(
        command_id="s", endpoint="scorer", name=name, spec=spec, make_default=default
    )


def deployed(
    name: str = "v1", spec: BatchDeploymentSpec = SPEC, default: bool = False
) -> BatchDeploymentSet:
    return BatchDeploymentSet(endpoint="scorer", name=name, spec=spec, default=default)


CASES = [
    Case("create", [], CREATE, [CREATED]),
    Case("create twice", [CREATED], CREATE, AlreadyExists),
    Case("deploy to no endpoint", [], deploy(), NotFound),
    Case("the first deployment is the default", [CREATED], deploy(), [deployed(default=True)]),
    Case("a second one is not", [CREATED, deployed(default=True)], deploy("v2"), [deployed("v2")]),
    Case(
        "unless made so",
        [CREATED, deployed(default=True)],
        deploy("v2", default=True),
        [deployed("v2", default=True)],
    ),
    Case("the same spec again", [CREATED, deployed(default=True)], deploy(), []),
    Case(
        "a new spec replaces it",
        [CREATED, deployed(default=True)],
        deploy(spec=OTHER),
        [deployed(spec=OTHER)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(batch.AGGREGATE, case)


def test_state() -> None:
    state = batch.AGGREGATE.fold(
        [CREATED, deployed(default=True), deployed("v2"), deployed("v2", OTHER, default=True)]
    )
    assert state.default == "v2" and state.deployments == {"v1": SPEC, "v2": OTHER}
