"""The experiment aggregate: a named group of runs, created on first use."""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.proto.commands import CreateExperiment
from cairn.proto.events import Event, ExperimentCreated
from cairn.proto.subjects import name_to_id

__all__ = ["AGGREGATE", "KIND", "ExperimentCommand", "ExperimentState", "decide", "evolve"]

KIND = "experiment"

ExperimentCommand = CreateExperiment


class ExperimentState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    experiment_id: str = ""
    name: str = ""


def evolve(state: ExperimentState, event: Event) -> ExperimentState:
    match event:
        case ExperimentCreated(experiment_id=eid, name=name):
            return ExperimentState(exists=True, experiment_id=eid, name=name)
    return state


def decide(state: ExperimentState, command: ExperimentCommand) -> list[Event]:
    """Get-or-create: creating an experiment that exists is a no-op."""
    match command:
        case CreateExperiment(name=name):
            return (
                []
                if state.exists
                else [ExperimentCreated(experiment_id=name_to_id(name), name=name)]
            )


AGGREGATE: Aggregate[ExperimentState, ExperimentCommand] = Aggregate(
    kind=KIND, initial=ExperimentState(), evolve=evolve, decide=decide, commands=ExperimentCommand
)
