"""The pipeline aggregate: which steps of a pipeline run started, were reused, ended.

A pipeline run is also a run (``RunCreated``, its parent-of-steps identity in run lists); this
aggregate (``cairn.ev.<ws>.pipeline.<run id>``) holds what only a pipeline has: its steps and
the orchestrator's decisions about them. Each decision is taken at most once per step: a
second ``StartStep`` or ``ReuseStep`` for a step that has one is a no-op, whoever sends it,
so two orchestrators (or one restarted) that reach the same step agree on what the log says.
A step starts only once every step upstream of it has completed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, InvalidBinding, InvalidTransition, NotFound
from cairn.proto.events import (
    Event,
    PipelineEnded,
    PipelineStepEnded,
    PipelineStepReused,
    PipelineStepStarted,
    PipelineSubmitted,
)
from cairn.proto.pipelines import PipelineSpec, PipelineStep, SubmitPipeline, step_run_id

__all__ = [
    "AGGREGATE",
    "KIND",
    "DecideSteps",
    "EndPipeline",
    "EndStep",
    "EndSteps",
    "PipelineCommand",
    "PipelineState",
    "ReuseStep",
    "StartStep",
    "StepState",
    "SubmitResolvedPipeline",
    "check_pipeline",
    "decide",
    "downstream",
    "evolve",
    "upstream",
]

KIND = "pipeline"

StepStatus = Literal["Running", "Reused", "Completed", "Failed", "Canceled", "Skipped"]
ENDED = ("Completed", "Failed", "Canceled", "Skipped")


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    status: StepStatus
    run_id: str = ""
    reused_run_id: str = ""
    reuse_key: str = ""
    error: str = ""

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class PipelineState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    run_id: str = ""
    experiment_name: str = ""
    spec: PipelineSpec | None = None
    steps: dict[str, StepState] = msgspec.field(default_factory=dict)
    status: Literal["Running", "Completed", "Failed", "Canceled"] = "Running"
    error: str = ""

    @property
    def ended(self) -> bool:
        return self.status != "Running"

    def step(self, name: str) -> PipelineStep:
        assert self.spec is not None
        for step in self.spec.steps:
            if step.name == name:
                return step
        raise NotFound(f"pipeline {self.run_id} has no step {name!r}")


def upstream(step: PipelineStep) -> set[str]:
    """The steps ``step`` waits for: those whose outputs it reads, and its ``depends_on``."""
    return {i.step for i in step.step_inputs} | set(step.depends_on)


def downstream(spec: PipelineSpec, names: Iterable[str]) -> set[str]:
    """Every step that depends on one of ``names``, directly or not."""
    found: set[str] = set()
    frontier = set(names)
    while frontier:
        nxt = {s.name for s in spec.steps if upstream(s) & frontier} - found
        found |= nxt
        frontier = nxt
    return found


def check_pipeline(spec: PipelineSpec) -> None:
    """Refuse a pipeline whose bindings do not hold, naming the YAML path of the key: an
    unknown step or output, a step waiting for itself through a cycle, a name used twice."""
    if not spec.steps:
        raise InvalidBinding.at("jobs", "a pipeline needs at least one step")
    outputs: dict[str, set[str]] = {}
    for step in spec.steps:
        if step.name in outputs:
            raise InvalidBinding.at(f"jobs.{step.name}", "a step name is used twice")
        outputs[step.name] = {o.name for o in step.job.outputs}
    for step in spec.steps:
        for bound in step.step_inputs:
            _check_ref(outputs, f"jobs.{step.name}.inputs.{bound.name}", bound.step, bound.output)
            if bound.step == step.name:
                raise InvalidBinding.at(
                    f"jobs.{step.name}.inputs.{bound.name}", "a step cannot read its own output"
                )
        for i, name in enumerate(step.depends_on):
            if name not in outputs or name == step.name:
                raise InvalidBinding.at(
                    f"jobs.{step.name}.depends_on[{i}]", f"no other step is named {name!r}"
                )
    for out in spec.outputs:
        _check_ref(outputs, f"outputs.{out.name}", out.step, out.output)
    _check_acyclic(spec)


def _check_ref(outputs: dict[str, set[str]], where: str, step: str, output: str) -> None:
    if step not in outputs:
        raise InvalidBinding.at(where, f"there is no step {step!r}")
    if output not in outputs[step]:
        known = ", ".join(sorted(outputs[step])) or "none"
        raise InvalidBinding.at(where, f"step {step!r} has no output {output!r} (it has: {known})")


def _check_acyclic(spec: PipelineSpec) -> None:
    """Kahn's algorithm: what cannot be ordered lies on (or after) a cycle."""
    waits = {s.name: upstream(s) for s in spec.steps}
    done: set[str] = set()
    while True:
        ready = {n for n, up in waits.items() if n not in done and up <= done}
        if not ready:
            break
        done |= ready
    left = [s.name for s in spec.steps if s.name not in done]
    if left:
        on_cycle = _cycle_member(waits, set(left))
        raise InvalidBinding.at(
            f"jobs.{on_cycle}", f"steps wait for each other in a cycle ({', '.join(left)})"
        )


def _cycle_member(waits: dict[str, set[str]], left: set[str]) -> str:
    """A step on a cycle (walking upstream within ``left`` must come back to one)."""
    node = sorted(left)[0]
    seen: list[str] = []
    while node not in seen:
        seen.append(node)
        node = sorted(waits[node] & left)[0]
    return node


def evolve(state: PipelineState, event: Event) -> PipelineState:
    match event:
        case PipelineSubmitted() as ev:
            return PipelineState(
                exists=True, run_id=ev.run_id, experiment_name=ev.experiment_name, spec=ev.pipeline
            )
        case PipelineStepStarted(step=step, run_id=run_id, reuse_key=key):
            new = StepState(status="Running", run_id=run_id, reuse_key=key)
            return msgspec.structs.replace(state, steps={**state.steps, step: new})
        case PipelineStepReused() as ev:
            new = StepState(
                status="Reused",
                run_id=ev.run_id,
                reused_run_id=ev.reused_run_id,
                reuse_key=ev.reuse_key,
            )
            return msgspec.structs.replace(state, steps={**state.steps, ev.step: new})
        case PipelineStepEnded(step=step, status=status, error=error) as ev:
            old = state.steps.get(step) or StepState(status="Skipped")
            ended = msgspec.structs.replace(
                old, status=status, error=error, run_id=old.run_id or ev.run_id or ""
            )
            return msgspec.structs.replace(state, steps={**state.steps, step: ended})
        case PipelineEnded(status=status, error=error):
            return msgspec.structs.replace(state, status=status, error=error)
    return state


# -- commands: the pipelines service's decisions; they never travel ------------------------


class SubmitResolvedPipeline(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``SubmitPipeline`` with the id of its experiment, which the service looked up."""

    command: SubmitPipeline
    experiment_id: str


class StartStep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Run step ``step`` (as child run ``step_run_id(pipeline, step)``), its reuse key
    ``reuse_key`` ("" : it may not be reused)."""

    step: str
    reuse_key: str = ""


class ReuseStep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Let completed run ``reused_run_id`` stand for step ``step`` (same reuse key)."""

    step: str
    reused_run_id: str
    reuse_key: str
    reason: str


class EndStep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Step ``step`` ended (its run ended with ``status``), or is ``Skipped``."""

    step: str
    status: Literal["Completed", "Failed", "Canceled", "Skipped"]
    error: str = ""


class EndPipeline(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Every step has ended: the pipeline ends ``status``."""

    status: Literal["Completed", "Failed", "Canceled"]
    error: str = ""


class DecideSteps(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Several steps started or reused together, each as its own command would (a step
    decided before stands): one append for a wave of independent steps. All or none. Ends
    may come first (each as its own ``EndStep``): the ends of the steps a wave waited for,
    recorded in the same append as the wave's decisions."""

    steps: list[StartStep | ReuseStep | EndStep]


class EndSteps(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Several steps' ends recorded together, each as its own ``EndStep`` would. All or none."""

    steps: list[EndStep]


PipelineCommand = (
    SubmitResolvedPipeline | StartStep | ReuseStep | EndStep | EndPipeline | DecideSteps | EndSteps
)


def decide(state: PipelineState, command: PipelineCommand) -> list[Event]:
    match command:
        case SubmitResolvedPipeline():
            return _submit(state, command)
        case StartStep() | ReuseStep():
            return _start(state, command)
        case EndStep():
            return _end_step(state, command)
        case DecideSteps(steps=many) | EndSteps(steps=many):
            return _each(state, many)
        case EndPipeline(status=status, error=error):
            _require(state)
            if state.ended:
                return []
            running = [n for n, s in state.steps.items() if not s.ended]
            assert state.spec is not None
            unstarted = [s.name for s in state.spec.steps if s.name not in state.steps]
            if running or unstarted:
                raise InvalidTransition(
                    f"pipeline {state.run_id} has steps that have not ended:"
                    f" {', '.join(running + unstarted)}"
                )
            return [PipelineEnded(status=status, error=error)]


def _each(state: PipelineState, commands: Sequence[PipelineCommand]) -> list[Event]:
    """The events of ``commands`` decided one after another, each on the state the ones
    before it left."""
    out: list[Event] = []
    for command in commands:
        events = decide(state, command)
        for event in events:
            state = evolve(state, event)
        out += events
    return out


def _require(state: PipelineState) -> PipelineSpec:
    if not state.exists or state.spec is None:
        raise NotFound(f"pipeline {state.run_id or '?'} does not exist")
    return state.spec


def _submit(state: PipelineState, command: SubmitResolvedPipeline) -> list[Event]:
    submit = command.command
    if state.exists:
        raise AlreadyExists(f"pipeline {submit.run_id} already exists")
    check_pipeline(submit.pipeline)
    return [
        PipelineSubmitted(
            run_id=submit.run_id,
            experiment_id=command.experiment_id,
            experiment_name=submit.experiment_name,
            pipeline=submit.pipeline,
            display_name=submit.display_name,
            description=submit.description,
            tags=submit.tags,
            scheduled=submit.scheduled,
        )
    ]


def _start(state: PipelineState, command: StartStep | ReuseStep) -> list[Event]:
    _require(state)
    name = command.step
    step = state.step(name)
    if name in state.steps:  # decided before (by this or another orchestrator): it stands
        return []
    if state.ended:
        raise InvalidTransition(f"pipeline {state.run_id} is {state.status}")
    waiting = sorted(
        up for up in upstream(step) if state.steps.get(up, _PENDING).status != "Completed"
    )
    if waiting:
        raise InvalidTransition(f"step {name} waits for {', '.join(waiting)}")
    run_id = step_run_id(state.run_id, name)
    if isinstance(command, StartStep):
        return [PipelineStepStarted(step=name, run_id=run_id, reuse_key=command.reuse_key)]
    return [
        PipelineStepReused(
            step=name,
            run_id=run_id,
            reused_run_id=command.reused_run_id,
            reuse_key=command.reuse_key,
            reason=command.reason,
        )
    ]


_PENDING = StepState(status="Skipped", run_id="")


def _end_step(state: PipelineState, command: EndStep) -> list[Event]:
    _require(state)
    name = command.step
    state.step(name)
    current = state.steps.get(name)
    if current is not None and current.ended:
        return []
    if current is None and command.status != "Skipped":
        raise InvalidTransition(f"step {name} never started; it can only be skipped")
    if current is not None and command.status == "Skipped":
        raise InvalidTransition(f"step {name} started; it ends as its run does")
    key = ""
    if current is not None and current.status == "Running" and command.status == "Completed":
        key = current.reuse_key
    run_id = current.run_id if current is not None else None
    return [
        PipelineStepEnded(
            step=name, status=command.status, run_id=run_id, error=command.error, reuse_key=key
        )
    ]


AGGREGATE: Aggregate[PipelineState, PipelineCommand] = Aggregate(
    kind=KIND, initial=PipelineState(), evolve=evolve, decide=decide, commands=PipelineCommand
)
