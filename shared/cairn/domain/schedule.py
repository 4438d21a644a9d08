"""The schedule aggregate: a stored submission fired by a time or event trigger.

The state keeps a cursor, ``after``: every due time up to it has been handled (fired, or
skipped). A ``FireSchedule`` carries the time it is decided at (``now``) and finds the due times
in ``(after, now]``:

* none: nothing happens;
* the last is on time (at most ``LATE_AFTER_S`` old): it fires; earlier ones, missed while no
  service ran, are covered by it (``catch_up: once``) or recorded as skipped (``skip``);
* the last is late too (no service ran when it was due): ``once`` fires it once for all of
  them (``covers`` counts them); ``skip`` records them skipped and fires nothing.

So a fire is never a burst, and a replica that decides after another finds the cursor moved
and decides nothing. A fire's run id is derived from the schedule (its workspace, id, name and
how many times it was created) and the due time, or the triggering event's sequence; the last
``RECENT`` fires are kept so the scheduler can check that a run claiming a fire was fired.
"""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.domain.triggers import check_trigger, pending
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.events import (
    Event,
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleDisabled,
    ScheduleEnabled,
    ScheduleFired,
    ScheduleFireFailed,
    ScheduleSkipped,
    ScheduleUpdated,
)
from cairn.proto.jobs import derived_id
from cairn.proto.schedules import (
    CatchUp,
    CreateSchedule,
    DeleteSchedule,
    DisableSchedule,
    EnableSchedule,
    EventTrigger,
    Submission,
    Trigger,
    UpdateSchedule,
)
from cairn.proto.subjects import name_to_id

__all__ = [
    "AGGREGATE",
    "KIND",
    "LATE_AFTER_S",
    "RECENT",
    "CreateScheduleAt",
    "DeleteScheduleAt",
    "DisableScheduleAt",
    "EnableScheduleAt",
    "FireOnEvent",
    "FireSchedule",
    "RecordFireFailed",
    "ScheduleCommand",
    "ScheduleState",
    "UpdateScheduleAt",
    "decide",
    "evolve",
    "fire_run_id",
    "template",
]

KIND = "schedule"
#: a due time decided on at most this late is on time; later, it was missed
LATE_AFTER_S = 30.0
#: how many of its last fires a schedule's state keeps
RECENT = 100
#: the ids a stored submission carries (each fire replaces them)
TEMPLATE_ID = "scheduled"


class ScheduleState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    incarnation: int = 0
    name: str = ""
    trigger: Trigger | None = None
    submission: Submission | None = None
    catch_up: CatchUp = "once"
    display_name: str | None = None
    description: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    enabled: bool = False
    created_at: float = 0.0
    #: the last sequence of EVENTS when the schedule was created: events up to it are older
    created_seq: int = 0
    #: every due time up to here was handled
    after: float = 0.0
    #: the last fires: (due, run id)
    recent: tuple[tuple[float, str], ...] = ()


class CreateScheduleAt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``CreateSchedule`` at ``now``, its submission pinned by the service; ``events_seq``
    is the last sequence of EVENTS then (the events a trigger counts come after it)."""

    command: CreateSchedule
    now: float
    events_seq: int = 0


class UpdateScheduleAt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    command: UpdateSchedule
    now: float


class DisableScheduleAt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    command: DisableSchedule
    now: float


class EnableScheduleAt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    command: EnableSchedule
    now: float


class DeleteScheduleAt(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    command: DeleteSchedule
    now: float


class FireSchedule(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Fire what a time trigger has due at ``now`` (the service's clock). ``workspace`` and
    ``schedule_id`` name the aggregate, which its run ids are derived from."""

    workspace: str
    schedule_id: str
    now: float


class FireOnEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Event ``event_seq`` of EVENTS (at ``event_time``) is a new version of a dataset or a
    moved alias of a model whose aggregate id is ``aggregate_id``; ``workspace`` and
    ``schedule_id`` name the schedule's aggregate."""

    workspace: str
    schedule_id: str
    on: str
    aggregate_id: str
    alias: str | None
    event_seq: int
    event_time: float
    now: float


class RecordFireFailed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    due: float
    run_id: str
    error: str


ScheduleCommand = (
    CreateScheduleAt
    | UpdateScheduleAt
    | DisableScheduleAt
    | EnableScheduleAt
    | DeleteScheduleAt
    | FireSchedule
    | FireOnEvent
    | RecordFireFailed
)


def template(submission: Submission) -> Submission:
    """The submission as stored: no ids of a client's (each fire replaces them); one that
    already names a fire is refused."""
    if submission.scheduled is not None:
        raise InvalidInput("submission.scheduled: each fire of the schedule sets it")
    return msgspec.structs.replace(
        submission, command_id=TEMPLATE_ID, run_id=TEMPLATE_ID, scheduled=None
    )


def fire_run_id(workspace: str, schedule_id: str, name: str, incarnation: int, cause: str) -> str:
    """The run id of a fire: the same for every replica deciding it, and different for a
    schedule of the same name in another workspace."""
    return derived_id("sched", workspace, schedule_id, name, incarnation, cause)


def _fired(state: ScheduleState, event: ScheduleFired) -> ScheduleState:
    recent = (*state.recent, (event.due, event.run_id))[-RECENT:]
    if event.event_seq is not None:
        return msgspec.structs.replace(state, recent=recent)
    return msgspec.structs.replace(state, recent=recent, after=max(state.after, event.due))


def evolve(state: ScheduleState, event: Event) -> ScheduleState:
    match event:
        case ScheduleCreated() as ev:
            return ScheduleState(
                exists=True,
                incarnation=ev.incarnation,
                name=ev.name,
                trigger=ev.trigger,
                submission=ev.submission,
                catch_up=ev.catch_up,
                display_name=ev.display_name,
                description=ev.description,
                tags=ev.tags,
                enabled=ev.enabled,
                created_at=ev.at,
                created_seq=ev.events_seq,
                after=ev.at,
            )
        case ScheduleUpdated() as ev:
            # a new trigger counts from the update, never from before the cursor
            after = max(state.after, ev.at) if ev.trigger != state.trigger else state.after
            return msgspec.structs.replace(
                state,
                trigger=ev.trigger,
                submission=ev.submission,
                catch_up=ev.catch_up,
                display_name=ev.display_name,
                description=ev.description,
                tags=ev.tags,
                after=after,
            )
        case ScheduleDisabled():
            return msgspec.structs.replace(state, enabled=False)
        case ScheduleEnabled(at=at):
            return msgspec.structs.replace(state, enabled=True, after=max(state.after, at))
        case ScheduleDeleted():
            return ScheduleState(incarnation=state.incarnation)
        case ScheduleFired() as ev:
            return _fired(state, ev)
        case ScheduleSkipped(last_due=last_due):
            return msgspec.structs.replace(state, after=max(state.after, last_due))
    return state


def _existing(state: ScheduleState, name: str) -> ScheduleState:
    if not state.exists:
        raise NotFound(f"no schedule {name!r}")
    return state


def _create(state: ScheduleState, cmd: CreateSchedule, now: float, seq: int) -> list[Event]:
    if state.exists:
        raise AlreadyExists(f"schedule {cmd.name!r} exists; update or delete it")
    check_trigger(cmd.trigger)
    return [
        ScheduleCreated(
            name=cmd.name,
            incarnation=state.incarnation + 1,
            trigger=cmd.trigger,
            submission=template(cmd.submission),
            catch_up=cmd.catch_up,
            display_name=cmd.display_name,
            description=cmd.description,
            tags=cmd.tags,
            enabled=not cmd.disabled,
            at=now,
            events_seq=seq,
        )
    ]


def _update(state: ScheduleState, cmd: UpdateSchedule, now: float) -> list[Event]:
    _existing(state, cmd.name)
    assert state.trigger is not None and state.submission is not None
    if cmd.trigger is not None:
        check_trigger(cmd.trigger)
    updated = ScheduleUpdated(
        trigger=state.trigger if cmd.trigger is None else cmd.trigger,
        submission=state.submission if cmd.submission is None else template(cmd.submission),
        catch_up=state.catch_up if cmd.catch_up is None else cmd.catch_up,
        display_name=state.display_name if cmd.display_name is None else cmd.display_name,
        description=state.description if cmd.description is None else cmd.description,
        tags=state.tags if cmd.tags is None else cmd.tags,
        at=now,
    )
    current = (
        state.trigger,
        state.submission,
        state.catch_up,
        state.display_name,
        state.description,
        state.tags,
    )
    new = (
        updated.trigger,
        updated.submission,
        updated.catch_up,
        updated.display_name,
        updated.description,
        updated.tags,
    )
    return [] if new == current else [updated]


def _fire(state: ScheduleState, cmd: FireSchedule) -> list[Event]:
    now = cmd.now
    trigger = state.trigger
    if not state.exists or not state.enabled or trigger is None:
        return []
    if isinstance(trigger, EventTrigger):
        return []
    found = pending(trigger, state.after, now, state.created_at)
    count, first, previous, last, _ = found
    if count == 0:
        return []
    run_id = fire_run_id(cmd.workspace, cmd.schedule_id, state.name, state.incarnation, repr(last))
    if now - last > LATE_AFTER_S:  # missed while no service ran
        if state.catch_up == "skip":
            return [ScheduleSkipped(first_due=first, last_due=last, count=count, at=now)]
        return [ScheduleFired(due=last, run_id=run_id, covers=count, at=now)]
    fired = ScheduleFired(due=last, run_id=run_id, at=now)
    if count == 1:
        return [fired]
    if state.catch_up == "skip":
        skipped = ScheduleSkipped(first_due=first, last_due=previous, count=count - 1, at=now)
        return [skipped, fired]
    return [msgspec.structs.replace(fired, covers=count)]


def _on_event(state: ScheduleState, cmd: FireOnEvent) -> list[Event]:
    trigger = state.trigger
    if not state.exists or not state.enabled or not isinstance(trigger, EventTrigger):
        return []
    if trigger.on != cmd.on or name_to_id(trigger.name) != cmd.aggregate_id:
        return []
    if trigger.alias is not None and trigger.alias != cmd.alias:
        return []
    # an event older than this schedule fires nothing: one at or before the stream's last
    # sequence when it was created (a schedule recorded before that was kept compares times)
    if state.created_seq:
        if cmd.event_seq <= state.created_seq:
            return []
    elif cmd.event_time < state.created_at:
        return []
    # events may be handled out of order (redelivered, two replicas): each fires once, in
    # any order; one fired recently is known here, and the command id derived from the
    # event is in the log for good (a repeated decision is a replay)
    cause = f"event:{cmd.event_seq}"
    run_id = fire_run_id(cmd.workspace, cmd.schedule_id, state.name, state.incarnation, cause)
    if any(fired == run_id for _, fired in state.recent):
        return []
    return [ScheduleFired(due=cmd.event_time, run_id=run_id, event_seq=cmd.event_seq, at=cmd.now)]


def decide(state: ScheduleState, command: ScheduleCommand) -> list[Event]:
    match command:
        case CreateScheduleAt(command=cmd, now=now, events_seq=seq):
            return _create(state, cmd, now, seq)
        case UpdateScheduleAt(command=cmd, now=now):
            return _update(state, cmd, now)
        case DisableScheduleAt(command=cmd, now=now):
            return [ScheduleDisabled(at=now)] if _existing(state, cmd.name).enabled else []
        case EnableScheduleAt(command=cmd, now=now):
            return [] if _existing(state, cmd.name).enabled else [ScheduleEnabled(at=now)]
        case DeleteScheduleAt(command=cmd, now=now):
            _existing(state, cmd.name)
            return [ScheduleDeleted(at=now)]
        case FireSchedule():
            return _fire(state, command)
        case FireOnEvent():
            return _on_event(state, command)
        case RecordFireFailed(due=due, run_id=run_id, error=error):
            if (due, run_id) not in state.recent:
                raise InvalidInput(f"run {run_id} is not a recent fire of this schedule")
            return [ScheduleFireFailed(due=due, run_id=run_id, error=error[:2000])]


AGGREGATE: Aggregate[ScheduleState, ScheduleCommand] = Aggregate(
    kind=KIND, initial=ScheduleState(), evolve=evolve, decide=decide, commands=ScheduleCommand
)
