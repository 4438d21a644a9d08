"""Schedules: a stored job submission fired by time or by an event.

A schedule (``cairn.cmd.<ws>.schedule.create``, the schedules service) names *when* (its
``trigger``) and *what* (``submission``: a wire submission as a client would send it, the
code snapshot already uploaded and the environment pinned when the schedule is created). At
each due time, or on each triggering event, the service records ``ScheduleFired`` on the
schedule's subject and sends the submission with a run id and a command id derived from the
schedule and that due time (or event sequence), so any number of replicas fire once.

Triggers, in the shape of Azure ML CLI v2 schedule YAML::

    {"type": "cron", "expression": "0 9 * * 1-5", "time_zone": "Europe/Berlin"}
    {"type": "recurrence", "frequency": "day", "interval": 1,
     "schedule": {"hours": [9], "minutes": [30]}, "time_zone": "UTC"}
    {"type": "event", "on": "dataset_version", "name": "diabetes"}
    {"type": "event", "on": "model_alias", "name": "churn", "alias": "prod"}

``start_time``/``end_time`` without an offset are wall-clock times in ``time_zone``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from cairn.proto._base import Id, Name, Strict, TagKey, TagValue, Text
from cairn.proto.commands import Command, Query
from cairn.proto.jobs import SubmitJob
from cairn.proto.pipelines import SubmitPipeline

__all__ = [
    "SCHEDULE_COMMAND_TYPES",
    "SCHEDULE_QUERY_TYPES",
    "CatchUp",
    "CreateSchedule",
    "CronTrigger",
    "DeleteSchedule",
    "DisableSchedule",
    "EnableSchedule",
    "EventTrigger",
    "GetSchedule",
    "ListSchedules",
    "RecurrencePattern",
    "RecurrenceTrigger",
    "Submission",
    "Trigger",
    "UpdateSchedule",
    "WeekDay",
]

WeekDay = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
#: what happens to fires missed while no schedules service ran: ``once`` runs the job once for
#: all of them; ``skip`` runs none (the next due time fires as usual). Never a burst.
CatchUp = Literal["once", "skip"]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CronTrigger(Strict, frozen=True, kw_only=True, tag="cron", tag_field="type"):
    """A five-field cron expression (``croniter``), read in ``time_zone``."""

    expression: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    time_zone: TimeZone = "UTC"
    start_time: datetime | None = None
    end_time: datetime | None = None


class RecurrencePattern(Strict, frozen=True, kw_only=True):
    """At which hours and minutes (each day the frequency picks), on which week days (weekly)
    or days of the month (monthly). Empty lists take the start time's own."""

    hours: Annotated[
        list[Annotated[int, msgspec.Meta(ge=0, le=23)]], msgspec.Meta(max_length=24)
    ] = msgspec.field(default_factory=list)
    minutes: Annotated[
        list[Annotated[int, msgspec.Meta(ge=0, le=59)]], msgspec.Meta(max_length=60)
    ] = msgspec.field(default_factory=list)
    week_days: Annotated[list[WeekDay], msgspec.Meta(max_length=7)] = msgspec.field(
        default_factory=list
    )
    month_days: Annotated[
        list[Annotated[int, msgspec.Meta(ge=1, le=31)]], msgspec.Meta(max_length=31)
    ] = msgspec.field(default_factory=list)


class RecurrenceTrigger(Strict, frozen=True, kw_only=True, tag="recurrence", tag_field="type"):
    """Every ``interval`` minutes, hours, days, weeks or months from ``start_time`` (default:
    when the schedule was created); ``schedule`` picks times within a day, week or month."""

    frequency: Literal["minute", "hour", "day", "week", "month"]
    interval: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    schedule: RecurrencePattern | None = None
    time_zone: TimeZone = "UTC"
    start_time: datetime | None = None
    end_time: datetime | None = None


class EventTrigger(Strict, frozen=True, kw_only=True, tag="event", tag_field="type"):
    """Fires once per new version of dataset ``name`` (``dataset_version``), or once per move
    of model ``name``'s alias ``alias`` (``model_alias``; any alias when none is named)."""

    on: Literal["dataset_version", "model_alias"]
    name: Name
    alias: Id | None = None


Trigger = CronTrigger | RecurrenceTrigger | EventTrigger

#: what a schedule submits: a wire submission as a client sends it, a job's or a pipeline's
#: (a published pipeline's stored submission, its parameters filled). Each fire replaces its
#: ``command_id`` and ``run_id`` with ids derived from the fire and sets ``scheduled``.
Submission = SubmitJob | SubmitPipeline


class CreateSchedule(Command, frozen=True, kw_only=True, tag=True):
    """Create schedule ``name`` (``AlreadyExists`` while one of that name exists). The
    submission's environment is pinned now: a registered name becomes the version it names
    (default: the latest) with its spec, so every fire runs the same code in the same
    environment; data inputs without a version are resolved at each fire."""

    VERB = "schedule.create"
    name: Name
    trigger: Trigger
    submission: Submission
    catch_up: CatchUp = "once"
    display_name: Name | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: start disabled (``schedule.enable`` starts it)
    disabled: bool = False


class UpdateSchedule(Command, frozen=True, kw_only=True, tag=True):
    """Change what is given (``None``: unchanged). A new trigger counts from now: fires the
    old trigger had due are not caught up."""

    VERB = "schedule.update"
    name: Name
    trigger: Trigger | None = None
    submission: Submission | None = None
    catch_up: CatchUp | None = None
    display_name: Name | None = None
    description: Text | None = None
    tags: dict[TagKey, TagValue] | None = None


class DisableSchedule(Command, frozen=True, kw_only=True, tag=True):
    """Stop firing; due times while disabled are never caught up."""

    VERB = "schedule.disable"
    name: Name


class EnableSchedule(Command, frozen=True, kw_only=True, tag=True):
    """Fire again, from now on."""

    VERB = "schedule.enable"
    name: Name


class DeleteSchedule(Command, frozen=True, kw_only=True, tag=True):
    """Delete the schedule (its fires and runs stay in the log); the name may be used again."""

    VERB = "schedule.delete"
    name: Name


class ListSchedules(Query, frozen=True, kw_only=True, tag=True):
    """The workspace's schedules, each with its next due time (null: none, or an event
    trigger) and its last fire."""

    NAME = "schedule.list"


class GetSchedule(Query, frozen=True, kw_only=True, tag=True):
    """One schedule: its definition, its next ``next_count`` due times and its last
    ``fire_count`` fires with their runs."""

    NAME = "schedule.get"
    name: Name
    next_count: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    fire_count: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10


SCHEDULE_COMMAND_TYPES: tuple[type[Command], ...] = (
    CreateSchedule,
    UpdateSchedule,
    DisableSchedule,
    EnableSchedule,
    DeleteSchedule,
)
SCHEDULE_QUERY_TYPES: tuple[type[Query], ...] = (ListSchedules, GetSchedule)
