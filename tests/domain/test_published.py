"""Published pipelines and endpoints: given-when-then, and parameters filled into a stored
submission."""

from __future__ import annotations

import pytest

from cairn.domain import published
from cairn.errors import AlreadyExists, InvalidInput
from cairn.proto.events import PipelineEndpointSet, PipelinePublished
from cairn.proto.jobs import JobSpec
from cairn.proto.pipelines import (
    PipelineSpec,
    PipelineStep,
    PublishPipeline,
    SetPipelineEndpoint,
    SubmitPipeline,
)
from tests.domain.gwt import Case, check, ids

STORED = SubmitPipeline(
    command_id="published",
    run_id="published",
    experiment_name="published",
    pipeline=PipelineSpec(
        steps=[
            PipelineStep(
                name="prep",
                job=JobSpec(command=["python", "prep.py", "--scale", "${{parameters.scale}}"]),
            )
        ]
    ),
)
PUBLISH = PublishPipeline(
    command_id="c1",
    pipeline_id="p1",
    name="prep",
    version="1",
    parameters={"scale": "2"},
    submission=STORED,
)
PUBLISHED = PipelinePublished(
    pipeline_id="p1", name="prep", version="1", parameters={"scale": "2"}, submission=STORED
)

CASES = [
    Case("publish", [], PUBLISH, [PUBLISHED]),
    Case("publish an id that exists", [PUBLISHED], PUBLISH, AlreadyExists, "exists already"),
]

ADD = SetPipelineEndpoint(command_id="c2", name="nightly", pipeline_id="p1", description="d")
FIRST = PipelineEndpointSet(name="nightly", pipeline_id="p1", default=True, description="d")
ADD_P2 = SetPipelineEndpoint(command_id="c3", name="nightly", pipeline_id="p2", make_default=False)
P2 = PipelineEndpointSet(name="nightly", pipeline_id="p2", default=False)
DEFAULT_P2 = SetPipelineEndpoint(command_id="c4", name="nightly", pipeline_id="p2")

ENDPOINT_CASES = [
    Case("a new endpoint: its first pipeline is the default", [], ADD, [FIRST]),
    Case(
        "a new endpoint, make_default or not",
        [],
        ADD_P2,
        [PipelineEndpointSet(name="nightly", pipeline_id="p2", default=True)],
    ),
    Case("add another, not the default", [FIRST], ADD_P2, [P2]),
    Case("add it again", [FIRST, P2], ADD_P2, []),
    Case(
        "make it the default",
        [FIRST, P2],
        DEFAULT_P2,
        [PipelineEndpointSet(name="nightly", pipeline_id="p2", default=True)],
    ),
    Case("the default made the default again", [FIRST], ADD, []),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_published(case: Case) -> None:
    check(published.PUBLISHED, case)


@pytest.mark.parametrize("case", ENDPOINT_CASES, ids=ids(ENDPOINT_CASES))
def test_endpoint(case: Case) -> None:
    check(published.ENDPOINT, case)


def test_the_default_moves_and_the_pipelines_are_kept() -> None:
    state = published.ENDPOINT.fold(
        [FIRST, P2, PipelineEndpointSet(name="nightly", pipeline_id="p2", default=True)]
    )
    assert (state.default, state.pipelines, state.description) == ("p2", ("p1", "p2"), "d")


def test_parameters_are_filled_from_the_run_then_the_defaults() -> None:
    filled = published.fill_parameters(STORED, {"scale": "2"}, {"scale": "5"})
    assert filled.pipeline.steps[0].job.command[-1] == "5"
    assert (
        published.fill_parameters(STORED, {"scale": "2"}, {}).pipeline.steps[0].job.command[-1]
        == "2"
    )
    with pytest.raises(InvalidInput, match="no parameter 'other'"):
        published.fill_parameters(STORED, {"scale": "2"}, {"other": "1"})
    with pytest.raises(InvalidInput, match="'scale' has no value"):
        published.fill_parameters(STORED, {}, {})
