"""The experiment aggregate: a named group of runs, created on first use."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cairn.domain import fold as fold_events
from cairn.proto.commands import CreateExperiment
from cairn.proto.events import Event, ExperimentCreated
from cairn.proto.subjects import name_to_id

__all__ = ["KIND", "ExperimentState", "decide", "evolve", "fold"]

KIND = "experiment"


class ExperimentState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    experiment_id: str = ""
    name: str = ""


def evolve(state: ExperimentState, event: Event) -> ExperimentState:
    match event:
        case ExperimentCreated(experiment_id=eid, name=name):
            return ExperimentState(exists=True, experiment_id=eid, name=name)
    return state


def fold(events: Iterable[Event]) -> ExperimentState:
    return fold_events(ExperimentState(), evolve, events)


def decide(state: ExperimentState, command: CreateExperiment) -> list[Event]:
    if state.exists:
        return []
    return [ExperimentCreated(experiment_id=name_to_id(command.name), name=command.name)]
