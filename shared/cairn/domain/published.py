"""Published pipelines and pipeline endpoints: two small aggregates.

A published pipeline (``cairn.ev.<ws>.published_pipeline.<id>``) is published once: a stored
``SubmitPipeline`` (placeholder ids, code already uploaded) and its parameters' defaults. A
pipeline endpoint (``cairn.ev.<ws>.pipeline_endpoint.<name id>``) is a name that runs one of
the published pipelines added to it, its default. Running either fills
``${{parameters.<name>}}`` in the steps' commands (:func:`fill_parameters`) and sends the
submission with the run's own ids.
"""

from __future__ import annotations

import re

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.events import Event, PipelineEndpointSet, PipelinePublished
from cairn.proto.pipelines import PublishPipeline, SetPipelineEndpoint, SubmitPipeline

__all__ = [
    "ENDPOINT",
    "PUBLISHED",
    "EndpointState",
    "PublishedState",
    "decide_endpoint",
    "decide_published",
    "evolve_endpoint",
    "evolve_published",
    "fill_parameters",
    "parameter_ref",
    "require_endpoint",
]

_REF = re.compile(r"\$\{\{\s*parameters\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def parameter_ref(name: str) -> str:
    """What stands for parameter ``name`` in a published step's command."""
    return f"${{{{parameters.{name}}}}}"


def fill_parameters(
    submission: SubmitPipeline, defaults: dict[str, str], given: dict[str, str]
) -> SubmitPipeline:
    """``submission`` with each ``${{parameters.<name>}}`` of its steps' commands replaced by
    the value ``given`` (else the default); a name the pipeline does not declare is refused."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InvalidInput(f"pipeline_parameters: the pipeline has no parameter {unknown[0]!r}")
    values = {**defaults, **given}

    def sub(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise InvalidInput(f"the pipeline's parameter {match.group(1)!r} has no value")
        return values[match.group(1)]

    steps = [
        msgspec.structs.replace(
            s, job=msgspec.structs.replace(s.job, command=[_REF.sub(sub, a) for a in s.job.command])
        )
        for s in submission.pipeline.steps
    ]
    pipeline = msgspec.structs.replace(submission.pipeline, steps=steps)
    return msgspec.structs.replace(submission, pipeline=pipeline)


class PublishedState(msgspec.Struct, frozen=True, kw_only=True):
    published: PipelinePublished | None = None


def evolve_published(state: PublishedState, event: Event) -> PublishedState:
    if isinstance(event, PipelinePublished):
        return PublishedState(published=event)
    return state


def decide_published(state: PublishedState, command: PublishPipeline) -> list[Event]:
    if state.published is not None:
        raise AlreadyExists(f"published pipeline {command.pipeline_id} exists already")
    return [
        PipelinePublished(
            pipeline_id=command.pipeline_id,
            name=command.name,
            version=command.version,
            description=command.description,
            parameters=dict(command.parameters),
            submission=command.submission,
        )
    ]


PUBLISHED: Aggregate[PublishedState, PublishPipeline] = Aggregate(
    kind="published_pipeline",
    initial=PublishedState(),
    evolve=evolve_published,
    decide=decide_published,
    commands=PublishPipeline,
)


class EndpointState(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    description: str = ""
    default: str = ""
    pipelines: tuple[str, ...] = ()


def evolve_endpoint(state: EndpointState, event: Event) -> EndpointState:
    if not isinstance(event, PipelineEndpointSet):
        return state
    pipelines = state.pipelines
    if event.pipeline_id not in pipelines:
        pipelines = (*pipelines, event.pipeline_id)
    return EndpointState(
        name=event.name,
        description=event.description or state.description,
        default=event.pipeline_id if event.default else state.default,
        pipelines=pipelines,
    )


def decide_endpoint(state: EndpointState, command: SetPipelineEndpoint) -> list[Event]:
    """The first pipeline of a new endpoint is its default; adding one already there, and
    making the default the default, change nothing."""
    new = not state.pipelines
    default = command.make_default or new
    there = command.pipeline_id in state.pipelines
    if there and (not default or state.default == command.pipeline_id):
        return []
    return [
        PipelineEndpointSet(
            name=command.name,
            pipeline_id=command.pipeline_id,
            default=default,
            description=command.description if new else "",
        )
    ]


ENDPOINT: Aggregate[EndpointState, SetPipelineEndpoint] = Aggregate(
    kind="pipeline_endpoint",
    initial=EndpointState(),
    evolve=evolve_endpoint,
    decide=decide_endpoint,
    commands=SetPipelineEndpoint,
)


def require_endpoint(state: EndpointState, name: str) -> str:
    """The endpoint's default pipeline id."""
    if not state.default:
        raise NotFound(f"no pipeline endpoint {name!r}")
    return state.default
