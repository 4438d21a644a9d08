"""The run aggregate: NotStarted -> Running -> Completed | Failed | Canceled.

Repeating a transition into the state a run is already in is a no-op, so a client that lost a
reply can send the command again under a new id; leaving a terminal state is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec

from cairn.domain import fold as fold_events
from cairn.errors import AlreadyExists, InvalidTransition, NotFound
from cairn.proto.commands import CancelRun, CompleteRun, CreateRun, FailRun, StartRun
from cairn.proto.events import (
    Event,
    RunCanceled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
)

__all__ = ["KIND", "RunCommand", "RunState", "RunStatus", "decide", "evolve", "fold"]

KIND = "run"

RunCommand = CreateRun | StartRun | CompleteRun | FailRun | CancelRun


class RunStatus(StrEnum):
    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    run_id: str = ""
    experiment_id: str = ""
    status: RunStatus = RunStatus.NOT_STARTED
    error: str = ""


def evolve(state: RunState, event: Event) -> RunState:
    match event:
        case RunCreated(run_id=run_id, experiment_id=experiment_id):
            return RunState(exists=True, run_id=run_id, experiment_id=experiment_id)
        case RunStarted():
            return msgspec.structs.replace(state, status=RunStatus.RUNNING)
        case RunCompleted():
            return msgspec.structs.replace(state, status=RunStatus.COMPLETED)
        case RunFailed(error=error):
            return msgspec.structs.replace(state, status=RunStatus.FAILED, error=error)
        case RunCanceled():
            return msgspec.structs.replace(state, status=RunStatus.CANCELED)
    return state


def fold(events: Iterable[Event]) -> RunState:
    return fold_events(RunState(), evolve, events)


def _target(command: RunCommand) -> tuple[RunStatus, Event]:
    match command:
        case StartRun(run_id=run_id):
            return RunStatus.RUNNING, RunStarted(run_id=run_id)
        case CompleteRun(run_id=run_id):
            return RunStatus.COMPLETED, RunCompleted(run_id=run_id)
        case FailRun(run_id=run_id, error=error):
            return RunStatus.FAILED, RunFailed(run_id=run_id, error=error)
        case CancelRun(run_id=run_id, reason=reason):
            return RunStatus.CANCELED, RunCanceled(run_id=run_id, reason=reason)
    raise TypeError(f"not a transition: {type(command).__name__}")


def decide(state: RunState, command: RunCommand, *, experiment_id: str = "") -> list[Event]:
    """``experiment_id`` is the resolved id of ``CreateRun.experiment_name`` (looked up by the
    caller, which also checks that the experiment and any parent run exist)."""
    if isinstance(command, CreateRun):
        if state.exists:
            raise AlreadyExists(f"run {command.run_id} already exists")
        return [
            RunCreated(
                run_id=command.run_id,
                experiment_id=experiment_id,
                experiment_name=command.experiment_name,
                display_name=command.display_name,
                parent_run_id=command.parent_run_id,
            )
        ]
    if not state.exists:
        raise NotFound(f"run {command.run_id} does not exist")
    target, event = _target(command)
    if state.status == target:
        return []
    if state.status.terminal:
        raise InvalidTransition(f"run {state.run_id} is {state.status}; cannot become {target}")
    return [event]
