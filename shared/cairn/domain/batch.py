"""Batch endpoints (``cairn.ev.<ws>.batch_endpoint.<name id>``): created once, their
deployments added or replaced, the first one (or the one made so) the default."""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, NotFound
from cairn.proto.batch import BatchDeploymentSpec, CreateBatchEndpoint, SetBatchDeployment
from cairn.proto.events import BatchDeploymentSet, BatchEndpointCreated, Event

__all__ = ["AGGREGATE", "BatchCommand", "BatchEndpointState", "decide", "evolve"]


class BatchEndpointState(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    description: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    default: str = ""
    deployments: dict[str, BatchDeploymentSpec] = msgspec.field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.name)


def evolve(state: BatchEndpointState, event: Event) -> BatchEndpointState:
    match event:
        case BatchEndpointCreated(name=name, description=description, tags=tags):
            return BatchEndpointState(name=name, description=description, tags=dict(tags))
        case BatchDeploymentSet(name=name, spec=spec, default=default):
            return msgspec.structs.replace(
                state,
                deployments={**state.deployments, name: spec},
                default=name if default else state.default,
            )
    return state


BatchCommand = CreateBatchEndpoint | SetBatchDeployment


def decide(state: BatchEndpointState, command: BatchCommand) -> list[Event]:
    match command:
        case CreateBatchEndpoint(name=name, description=description, tags=tags):
            if state.exists:
                raise AlreadyExists(f"batch endpoint {name!r} exists already")
            return [BatchEndpointCreated(name=name, description=description, tags=dict(tags))]
        case SetBatchDeployment(endpoint=endpoint, name=name, spec=spec):
            if not state.exists:
                raise NotFound(f"no batch endpoint {endpoint!r} (create it first)")
            default = command.make_default or not state.default
            if state.deployments.get(name) == spec and (not default or state.default == name):
                return []  # the same spec again changes nothing
            return [BatchDeploymentSet(endpoint=endpoint, name=name, spec=spec, default=default)]


AGGREGATE: Aggregate[BatchEndpointState, BatchCommand] = Aggregate(
    kind="batch_endpoint",
    initial=BatchEndpointState(),
    evolve=evolve,
    decide=decide,
    commands=BatchCommand,
)
