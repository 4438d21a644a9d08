"""The pipeline aggregate as a table: submission checks the bindings, each step is decided
once, a step starts only after its upstream steps completed, the pipeline ends after them."""

from __future__ import annotations

import pytest

from cairn.domain import pipeline
from cairn.domain.pipeline import (
    DecideSteps,
    EndPipeline,
    EndStep,
    EndSteps,
    ReuseStep,
    StartStep,
    SubmitResolvedPipeline,
)
from cairn.errors import AlreadyExists, InvalidBinding, InvalidTransition, NotFound
from cairn.proto.events import (
    PipelineEnded,
    PipelineStepEnded,
    PipelineStepReused,
    PipelineStepStarted,
    PipelineSubmitted,
)
from cairn.proto.jobs import JobOutput, JobSpec
from cairn.proto.pipelines import (
    PipelineOutput,
    PipelineSpec,
    PipelineStep,
    StepInput,
    SubmitPipeline,
    step_run_id,
)
from tests.domain.gwt import Case, check, ids


def step(name: str, *reads: tuple[str, str], after: tuple[str, ...] = ()) -> PipelineStep:
    return PipelineStep(
        name=name,
        job=JobSpec(command=["true"], outputs=[JobOutput(name="out")]),
        step_inputs=[StepInput(name=f"in_{s}", step=s, output=o) for s, o in reads],
        depends_on=list(after),
    )


TWO = PipelineSpec(steps=[step("prep"), step("train", ("prep", "out"))])


def submit(spec: PipelineSpec) -> SubmitResolvedPipeline:
    cmd = SubmitPipeline(command_id="c", run_id="p1", experiment_name="e", pipeline=spec)
    return SubmitResolvedPipeline(command=cmd, experiment_id="e")


SUBMITTED = PipelineSubmitted(run_id="p1", experiment_id="e", experiment_name="e", pipeline=TWO)
PREP = step_run_id("p1", "prep")
TRAIN = step_run_id("p1", "train")
PREP_STARTED = PipelineStepStarted(step="prep", run_id=PREP, reuse_key="k1")
PREP_DONE = PipelineStepEnded(step="prep", status="Completed", run_id=PREP, reuse_key="k1")
TRAIN_STARTED = PipelineStepStarted(step="train", run_id=TRAIN, reuse_key="k2")
TRAIN_DONE = PipelineStepEnded(step="train", status="Completed", run_id=TRAIN, reuse_key="k2")
WIDE = PipelineSpec(steps=[step("prep"), step("a", after=("prep",)), step("b", after=("prep",))])
WIDE_SUBMITTED = PipelineSubmitted(
    run_id="p1", experiment_id="e", experiment_name="e", pipeline=WIDE
)
A, B = step_run_id("p1", "a"), step_run_id("p1", "b")
WIDE_READY = [WIDE_SUBMITTED, PREP_STARTED, PREP_DONE]
A_REUSED = PipelineStepReused(step="a", run_id=A, reused_run_id="old", reuse_key="ka", reason="r")
B_STARTED = PipelineStepStarted(step="b", run_id=B, reuse_key="kb")

CASES = [
    Case("submit records the pipeline", [], submit(TWO), [SUBMITTED]),
    Case("submit twice is refused", [SUBMITTED], submit(TWO), AlreadyExists),
    Case(
        "an unknown upstream step is refused by path",
        [],
        submit(PipelineSpec(steps=[step("train", ("nope", "out"))])),
        InvalidBinding,
        r"^jobs\.train\.inputs\.in_nope: there is no step 'nope'",
    ),
    Case(
        "an unknown output is refused by path",
        [],
        submit(PipelineSpec(steps=[step("prep"), step("train", ("prep", "data"))])),
        InvalidBinding,
        r"^jobs\.train\.inputs\.in_prep: step 'prep' has no output 'data'",
    ),
    Case(
        "a cycle is refused",
        [],
        submit(PipelineSpec(steps=[step("a", ("b", "out")), step("b", ("a", "out"))])),
        InvalidBinding,
        r"^jobs\.a: steps wait for each other in a cycle",
    ),
    Case(
        "an unknown depends_on is refused",
        [],
        submit(PipelineSpec(steps=[step("a", after=("z",))])),
        InvalidBinding,
        r"^jobs\.a\.depends_on\[0\]",
    ),
    Case(
        "a pipeline output naming an unknown step output is refused",
        [],
        submit(
            PipelineSpec(
                steps=[step("a")], outputs=[PipelineOutput(name="o", step="a", output="x")]
            )
        ),
        InvalidBinding,
        r"^outputs\.o: ",
    ),
    Case(
        "a ready step starts", [SUBMITTED], StartStep(step="prep", reuse_key="k1"), [PREP_STARTED]
    ),
    Case("a step is started once", [SUBMITTED, PREP_STARTED], StartStep(step="prep"), []),
    Case(
        "a step waits for its upstream",
        [SUBMITTED, PREP_STARTED],
        StartStep(step="train"),
        InvalidTransition,
        "waits for prep",
    ),
    Case(
        "a step starts after its upstream completed",
        [SUBMITTED, PREP_STARTED, PREP_DONE],
        StartStep(step="train", reuse_key="k2"),
        [TRAIN_STARTED],
    ),
    Case("an unknown step is refused", [SUBMITTED], StartStep(step="nope"), NotFound),
    Case("no step of a missing pipeline", [], StartStep(step="prep"), NotFound),
    Case(
        "a reused step names the run it stands for",
        [SUBMITTED],
        ReuseStep(step="prep", reused_run_id="old", reuse_key="k1", reason="same inputs"),
        [
            PipelineStepReused(
                step="prep", run_id=PREP, reused_run_id="old", reuse_key="k1", reason="same inputs"
            )
        ],
    ),
    Case(
        "reuse after a start is a no-op",
        [SUBMITTED, PREP_STARTED],
        ReuseStep(step="prep", reused_run_id="old", reuse_key="k1", reason="r"),
        [],
    ),
    Case(
        "a completed step keeps its reuse key",
        [SUBMITTED, PREP_STARTED],
        EndStep(step="prep", status="Completed"),
        [PREP_DONE],
    ),
    Case(
        "a failed step offers no reuse",
        [SUBMITTED, PREP_STARTED],
        EndStep(step="prep", status="Failed", error="exit 1"),
        [PipelineStepEnded(step="prep", status="Failed", run_id=PREP, error="exit 1")],
    ),
    Case(
        "a step ends once",
        [SUBMITTED, PREP_STARTED, PREP_DONE],
        EndStep(step="prep", status="Failed"),
        [],
    ),
    Case(
        "an unstarted step is skipped",
        [SUBMITTED],
        EndStep(step="train", status="Skipped"),
        [PipelineStepEnded(step="train", status="Skipped")],
    ),
    Case(
        "an unstarted step cannot complete",
        [SUBMITTED],
        EndStep(step="train", status="Completed"),
        InvalidTransition,
    ),
    Case(
        "a wave is decided together, each step as alone",
        WIDE_READY,
        DecideSteps(
            steps=[
                ReuseStep(step="a", reused_run_id="old", reuse_key="ka", reason="r"),
                StartStep(step="b", reuse_key="kb"),
            ]
        ),
        [A_REUSED, B_STARTED],
    ),
    Case(
        "the ends a wave waited for come first, in the same append",
        [WIDE_SUBMITTED, PREP_STARTED],
        DecideSteps(
            steps=[
                EndStep(step="prep", status="Completed"),
                ReuseStep(step="a", reused_run_id="old", reuse_key="ka", reason="r"),
                StartStep(step="b", reuse_key="kb"),
            ]
        ),
        [PREP_DONE, A_REUSED, B_STARTED],
    ),
    Case(
        "a wave before the end it waits for is refused whole",
        [WIDE_SUBMITTED, PREP_STARTED],
        DecideSteps(steps=[StartStep(step="a"), EndStep(step="prep", status="Completed")]),
        InvalidTransition,
        "waits for prep",
    ),
    Case(
        "a step of a wave decided before stands",
        [*WIDE_READY, A_REUSED],
        DecideSteps(steps=[StartStep(step="a"), StartStep(step="b", reuse_key="kb")]),
        [B_STARTED],
    ),
    Case(
        "a wave with a step not ready is refused whole",
        [WIDE_SUBMITTED],
        DecideSteps(steps=[StartStep(step="prep"), StartStep(step="a")]),
        InvalidTransition,
        "waits for prep",
    ),
    Case(
        "ends are recorded together, each once",
        [*WIDE_READY, A_REUSED, B_STARTED, PipelineStepEnded(step="b", status="Failed", run_id=B)],
        EndSteps(
            steps=[EndStep(step="a", status="Completed"), EndStep(step="b", status="Completed")]
        ),
        [PipelineStepEnded(step="a", status="Completed", run_id=A)],
    ),
    Case(
        "the pipeline ends once every step has",
        [SUBMITTED, PREP_STARTED, PREP_DONE, TRAIN_STARTED, TRAIN_DONE],
        EndPipeline(status="Completed"),
        [PipelineEnded(status="Completed")],
    ),
    Case(
        "not while a step runs",
        [SUBMITTED, PREP_STARTED],
        EndPipeline(status="Completed"),
        InvalidTransition,
        "prep, train",
    ),
    Case(
        "an ended pipeline ends once",
        [
            SUBMITTED,
            PREP_STARTED,
            PREP_DONE,
            TRAIN_STARTED,
            TRAIN_DONE,
            PipelineEnded(status="Completed"),
        ],
        EndPipeline(status="Failed"),
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(pipeline.AGGREGATE, case)


def test_step_run_ids_are_derived() -> None:
    assert step_run_id("p1", "prep") == PREP != step_run_id("p2", "prep")
    assert len(PREP) <= 64


def test_downstream_is_transitive() -> None:
    spec = PipelineSpec(
        steps=[step("a"), step("b", ("a", "out")), step("c", after=("b",)), step("d")]
    )
    assert pipeline.downstream(spec, ["a"]) == {"b", "c"}
