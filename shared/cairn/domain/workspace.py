"""The workspace aggregate."""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import Event, WorkspaceCreated

__all__ = ["AGGREGATE", "KIND", "WorkspaceCommand", "WorkspaceState", "decide", "evolve"]

KIND = "workspace"

WorkspaceCommand = CreateWorkspace


class WorkspaceState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    name: str = ""
    description: str = ""


def evolve(state: WorkspaceState, event: Event) -> WorkspaceState:
    match event:
        case WorkspaceCreated(name=name, description=description):
            return WorkspaceState(exists=True, name=name, description=description)
    return state


def decide(state: WorkspaceState, command: WorkspaceCommand) -> list[Event]:
    """Creating a workspace that exists is a no-op (get-or-create)."""
    match command:
        case CreateWorkspace(name=name, description=description):
            return [] if state.exists else [WorkspaceCreated(name=name, description=description)]


AGGREGATE: Aggregate[WorkspaceState, WorkspaceCommand] = Aggregate(
    kind=KIND, initial=WorkspaceState(), evolve=evolve, decide=decide, commands=WorkspaceCommand
)
