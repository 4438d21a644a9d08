"""The experiment aggregate: a named group of runs, created on first use, archived (hidden
from lists, its runs kept) and restored."""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import NotFound
from cairn.proto.commands import ArchiveExperiment, CreateExperiment
from cairn.proto.events import Event, ExperimentArchived, ExperimentCreated, ExperimentRestored
from cairn.proto.subjects import name_to_id

__all__ = ["AGGREGATE", "KIND", "ExperimentCommand", "ExperimentState", "decide", "evolve"]

KIND = "experiment"

ExperimentCommand = CreateExperiment | ArchiveExperiment


class ExperimentState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    experiment_id: str = ""
    name: str = ""
    archived: bool = False


def evolve(state: ExperimentState, event: Event) -> ExperimentState:
    match event:
        case ExperimentCreated(experiment_id=eid, name=name):
            return ExperimentState(exists=True, experiment_id=eid, name=name)
        case ExperimentArchived():
            return msgspec.structs.replace(state, archived=True)
        case ExperimentRestored():
            return msgspec.structs.replace(state, archived=False)
    return state


def decide(state: ExperimentState, command: ExperimentCommand) -> list[Event]:
    """Get-or-create: creating an experiment that exists is a no-op. Archiving an archived
    one, or restoring an active one, is a no-op too."""
    match command:
        case CreateExperiment(name=name):
            return (
                []
                if state.exists
                else [ExperimentCreated(experiment_id=name_to_id(name), name=name)]
            )
        case ArchiveExperiment(name=name, restore=restore):
            if not state.exists:
                raise NotFound(f"no experiment {name!r}")
            if restore:
                return [ExperimentRestored()] if state.archived else []
            return [] if state.archived else [ExperimentArchived()]


AGGREGATE: Aggregate[ExperimentState, ExperimentCommand] = Aggregate(
    kind=KIND, initial=ExperimentState(), evolve=evolve, decide=decide, commands=ExperimentCommand
)
