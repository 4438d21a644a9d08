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
from cairn.proto.commands import (
    AddRunProperties,
    CancelRun,
    CompleteRun,
    CreateRun,
    FailRun,
    SetRunTags,
    StartRun,
)
from cairn.proto.events import (
    ArtifactCommitted,
    Event,
    RunCanceled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunPropertiesAdded,
    RunStarted,
    RunTagsSet,
)

__all__ = [
    "KIND",
    "RunCommand",
    "RunState",
    "RunStatus",
    "decide",
    "decide_commit",
    "evolve",
    "fold",
]

KIND = "run"

RunCommand = (
    CreateRun | StartRun | CompleteRun | FailRun | CancelRun | SetRunTags | AddRunProperties
)


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
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    properties: dict[str, str] = msgspec.field(default_factory=dict)
    files: dict[str, str] = msgspec.field(default_factory=dict)


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
        case RunTagsSet(tags=tags):
            return msgspec.structs.replace(state, tags={**state.tags, **tags})
        case RunPropertiesAdded(properties=properties):
            return msgspec.structs.replace(state, properties={**state.properties, **properties})
        case ArtifactCommitted(path=path, digest=digest):
            return msgspec.structs.replace(state, files={**state.files, path: digest})
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
    if isinstance(command, SetRunTags):
        changed = {k: v for k, v in command.tags.items() if state.tags.get(k) != v}
        return [RunTagsSet(run_id=state.run_id, tags=changed)] if changed else []
    if isinstance(command, AddRunProperties):
        return _add_properties(state, command.properties)
    target, event = _target(command)
    if state.status == target:
        return []
    if state.status.terminal:
        raise InvalidTransition(f"run {state.run_id} is {state.status}; cannot become {target}")
    return [event]


def _add_properties(state: RunState, properties: dict[str, str]) -> list[Event]:
    clash = sorted(k for k, v in properties.items() if state.properties.get(k, v) != v)
    if clash:
        raise AlreadyExists(f"run {state.run_id} properties are write-once: {', '.join(clash)}")
    new = {k: v for k, v in properties.items() if k not in state.properties}
    return [RunPropertiesAdded(run_id=state.run_id, properties=new)] if new else []


def decide_commit(state: RunState, path: str, digest: str, size: int) -> list[Event]:
    """Record a run file. The same bytes at the same path again is a no-op; other bytes at a
    path that exists are refused (run files are write-once, as in Azure ML)."""
    if not state.exists:
        raise NotFound(f"run {state.run_id or '?'} does not exist")
    existing = state.files.get(path)
    if existing == digest:
        return []
    if existing is not None:
        raise AlreadyExists(f"run {state.run_id} already has a different file at {path!r}")
    return [ArtifactCommitted(run_id=state.run_id, path=path, digest=digest, size=size)]
