"""The workspace aggregate."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cairn.domain import fold as fold_events
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import Event, WorkspaceCreated

__all__ = ["KIND", "WorkspaceState", "decide", "evolve", "fold"]

KIND = "workspace"


class WorkspaceState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    name: str = ""
    description: str = ""


def evolve(state: WorkspaceState, event: Event) -> WorkspaceState:
    match event:
        case WorkspaceCreated(name=name, description=description):
            return WorkspaceState(exists=True, name=name, description=description)
    return state


def fold(events: Iterable[Event]) -> WorkspaceState:
    return fold_events(WorkspaceState(), evolve, events)


def decide(state: WorkspaceState, command: CreateWorkspace) -> list[Event]:
    """Creating a workspace that exists is a no-op (get-or-create)."""
    if state.exists:
        return []
    return [WorkspaceCreated(name=command.name, description=command.description)]
