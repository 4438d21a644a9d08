"""Pipelines: a run whose steps are child runs, each an ordinary job.

``SubmitPipeline`` (``cairn.cmd.<ws>.pipeline.submit``, the pipelines service) carries the whole
pipeline, self-contained: every step's job spec with its code snapshot already uploaded, its
inputs and outputs resolved to data references, and the bindings between steps. It can be
stored and sent again (a schedule): each sending is a new pipeline run with a new ``run_id``.

The service records ``PipelineSubmitted`` on the pipeline's subject
(``cairn.ev.<ws>.pipeline.<run_id>``) and creates the pipeline run (a run like any other, the
parent of the steps' runs). Its orchestrator then starts each step whose upstream steps have
completed: a step's run id is :func:`step_run_id` of the pipeline run and the step's name, and
the step is submitted as a ``SubmitJob`` with ``parent_run_id`` set, so however often that
decision is taken (a restart, two replicas) the step runs once.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from cairn.proto._base import Count, Id, Key, Name, Strict, TagKey, TagValue, Text
from cairn.proto.commands import Command, Query
from cairn.proto.jobs import JobSpec, ScheduledBy

__all__ = [
    "PIPELINE_COMMAND_TYPES",
    "PIPELINE_QUERY_TYPES",
    "PUBLISHED_TAG",
    "GetPipeline",
    "GetPipelineEndpoint",
    "GetPublishedPipeline",
    "ListPublishedPipelines",
    "PipelineOutput",
    "PipelineSpec",
    "PipelineStep",
    "PublishPipeline",
    "RunPublishedPipeline",
    "SetPipelineEndpoint",
    "StepInput",
    "SubmitPipeline",
    "step_run_id",
]


#: the tag of a run of a published pipeline (and of a schedule's stored submission of one)
#: naming the published pipeline
PUBLISHED_TAG = "published_pipeline_id"


def step_run_id(pipeline_run_id: str, step: str) -> str:
    """The run id of step ``step`` of pipeline run ``pipeline_run_id``: the same every time it
    is derived, so a step is submitted once however often its start is decided."""
    digest = hashlib.sha256(f"{pipeline_run_id}\x1f{step}".encode()).hexdigest()
    return f"{pipeline_run_id[:24]}-{digest[:24]}"


class StepInput(Strict, frozen=True, kw_only=True):
    """Input ``name`` of a step is output ``output`` of step ``step`` (the files that step's
    run stored there), made a local path before the step starts like any data input."""

    name: Id
    step: Id
    output: Id
    mode: Literal["download", "mount"] = "mount"


class PipelineStep(Strict, frozen=True, kw_only=True):
    """One step: a job (``job``: its command, snapshot, environment, data inputs and outputs)
    on ``compute``, its inputs bound to other steps' outputs (``step_inputs``), the steps it
    waits for besides those (``depends_on``). ``allow_reuse``: a completed run of the same
    step on the same inputs may stand in for it."""

    name: Id
    compute: Key = "local"
    job: JobSpec
    environment_name: Name | None = None
    environment_version: Count | None = None
    display_name: Name | None = None
    step_inputs: list[StepInput] = msgspec.field(default_factory=list)
    depends_on: list[Id] = msgspec.field(default_factory=list)
    allow_reuse: bool = True
    #: the tags of the step's run (besides ``pipeline_step``, its name)
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class PipelineOutput(Strict, frozen=True, kw_only=True):
    """Pipeline output ``name`` is output ``output`` of step ``step``."""

    name: Id
    step: Id
    output: Id


class PipelineSpec(Strict, frozen=True, kw_only=True):
    """The steps and how failures and reuse are handled: a failed step fails the pipeline and
    what has not started is skipped, unless ``continue_on_step_failure`` (then only the steps
    downstream of it are); ``force_rerun`` runs every step even where a run could be reused."""

    steps: list[PipelineStep]
    outputs: list[PipelineOutput] = msgspec.field(default_factory=list)
    continue_on_step_failure: bool = False
    force_rerun: bool = False


class SubmitPipeline(Command, frozen=True, kw_only=True, tag=True):
    """Create pipeline run ``run_id`` in ``experiment_name`` and run its steps."""

    VERB = "pipeline.submit"
    run_id: Id
    experiment_name: Name
    pipeline: PipelineSpec
    display_name: Name | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: the schedule's fire that sends it (a stored submission); the pipelines service accepts
    #: it only when the schedule's log records that fire with this run id
    scheduled: ScheduledBy | None = None


class PublishPipeline(Command, frozen=True, kw_only=True, tag=True):
    """Store ``submission`` (a ``SubmitPipeline`` with placeholder ids, its code already
    uploaded) as published pipeline ``pipeline_id`` (made by the client): each run of it sends
    it again with new ids, ``${{parameters.<name>}}`` in its steps' commands filled with the
    run's values or ``parameters``' defaults."""

    VERB = "pipeline.publish"
    pipeline_id: Id
    name: Name
    version: Name | None = None
    description: Text = ""
    parameters: dict[Id, Text] = msgspec.field(default_factory=dict)
    submission: SubmitPipeline


class SetPipelineEndpoint(Command, frozen=True, kw_only=True, tag=True):
    """Add published pipeline ``pipeline_id`` to endpoint ``name`` (made when new, with that
    pipeline as its default); ``make_default``: it becomes the one the endpoint runs."""

    VERB = "pipeline.endpoint"
    name: Name
    pipeline_id: Id
    make_default: bool = True
    description: Text = ""


class RunPublishedPipeline(Command, frozen=True, kw_only=True, tag=True):
    """Run published pipeline ``pipeline_id``, or endpoint ``endpoint``'s default one, as
    pipeline run ``run_id`` of ``experiment_name`` (its parameters' values in
    ``parameters``, the defaults for the rest)."""

    VERB = "pipeline.run"
    run_id: Id
    experiment_name: Name
    pipeline_id: Id | None = None
    endpoint: Name | None = None
    parameters: dict[Id, Text] = msgspec.field(default_factory=dict)
    display_name: Name | None = None
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class GetPublishedPipeline(Query, frozen=True, kw_only=True, tag=True):
    """A published pipeline: its name, version, parameters and stored submission."""

    NAME = "pipeline.published.get"
    pipeline_id: Id


class ListPublishedPipelines(Query, frozen=True, kw_only=True, tag=True):
    """The workspace's published pipelines, newest first (without their submissions)."""

    NAME = "pipeline.published.list"


class GetPipelineEndpoint(Query, frozen=True, kw_only=True, tag=True):
    """An endpoint: its default pipeline and the pipelines added to it."""

    NAME = "pipeline.endpoint.get"
    name: Name


class GetPipeline(Query, frozen=True, kw_only=True, tag=True):
    """A pipeline run with its steps: status, run id, reuse, times, the steps each waits for
    (``upstream``)."""

    NAME = "pipeline.get"
    run_id: Id


PIPELINE_COMMAND_TYPES: tuple[type[Command], ...] = (
    SubmitPipeline,
    PublishPipeline,
    SetPipelineEndpoint,
    RunPublishedPipeline,
)
PIPELINE_QUERY_TYPES: tuple[type[Query], ...] = (
    GetPipeline,
    GetPublishedPipeline,
    ListPublishedPipelines,
    GetPipelineEndpoint,
)
