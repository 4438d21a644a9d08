"""``Schedule`` and ``ScheduleRecurrence`` with the Azure ML v1 names: a facade over
``ws.schedules``.

As in Azure ML v1 a schedule runs a published pipeline (``pipeline_id=``, its
``pipeline_parameters=``); it may also submit a job (``job=``: a ``ScriptRunConfig`` or the
path of a job file)::

    recurrence = ScheduleRecurrence(frequency="Day", interval=1, hours=[2], minutes=[0])
    schedule = Schedule.create(ws, "nightly", experiment_name="train", job=config,
                               recurrence=recurrence)
    schedule.disable()
"""

from __future__ import annotations

import builtins
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import msgspec

from cairn.domain.published import fill_parameters
from cairn.domain.triggers import check_trigger
from cairn.errors import InvalidInput
from cairn.proto.pipelines import PUBLISHED_TAG, SubmitPipeline
from cairn.proto.schedules import RecurrencePattern, RecurrenceTrigger, WeekDay
from cairn.sdk._async_pipelines import published_pipeline
from cairn.sdk._jobfile import load_job_file
from cairn.sdk._jobs import ScriptRunConfig
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._runtime import WorkspaceBase

__all__ = ["Schedule", "ScheduleRecurrence"]

_AT_ONCE = "a schedule's change holds from the moment it is recorded; nothing is provisioned"
_FREQUENCIES = ("minute", "hour", "day", "week", "month")
_DATASTORE_TRIGGER = (
    "Cairn triggers on a new dataset version instead of polling a datastore path:"
    " a schedule file with trigger: {type: event, on: dataset_version, name: ...}"
)


class ScheduleRecurrence:
    """How often a schedule fires: every ``interval`` ``frequency`` (``"Minute"``, ``"Hour"``,
    ``"Day"``, ``"Week"``, ``"Month"``) from ``start_time`` (a ``datetime`` or ISO 8601 text,
    without an offset a wall-clock time in ``time_zone``), at ``hours``/``minutes`` (or
    ``time_of_day`` ``"hh:mm"``) on ``week_days``."""

    def __init__(
        self,
        frequency: str,
        interval: int,
        start_time: datetime | str | None = None,
        time_zone: str | None = None,
        hours: builtins.list[int] | None = None,
        minutes: builtins.list[int] | None = None,
        week_days: builtins.list[str] | None = None,
        time_of_day: str | None = None,
    ) -> None:
        self.frequency = frequency
        self.interval = interval
        self.start_time = start_time
        self.time_zone = time_zone
        self.hours = hours
        self.minutes = minutes
        self.week_days = week_days
        self.time_of_day = time_of_day
        self.trigger()  # checked now, naming what is wrong

    def _times(self) -> tuple[builtins.list[int], builtins.list[int]]:
        hours, minutes = list(self.hours or []), list(self.minutes or [])
        if self.time_of_day is not None:
            hh, sep, mm = self.time_of_day.partition(":")
            if not sep or not hh.isdigit() or not mm.isdigit():
                raise InvalidInput(f"time_of_day {self.time_of_day!r:.40} is not 'hh:mm'")
            hours, minutes = [int(hh), *hours], [int(mm), *minutes]
        return hours, minutes

    def trigger(self) -> RecurrenceTrigger:
        """The recurrence as a schedule's trigger."""
        frequency = str(self.frequency).lower()
        if frequency not in _FREQUENCIES:
            raise InvalidInput(
                f"frequency {self.frequency!r:.40} is not one of {', '.join(_FREQUENCIES)}"
            )
        days = [str(d).lower() for d in self.week_days or []]
        hours, minutes = self._times()
        pattern = None
        if hours or minutes or days:
            pattern = RecurrencePattern(
                hours=hours, minutes=minutes, week_days=cast(list[WeekDay], days)
            )
        start = self.start_time
        if isinstance(start, str):
            try:
                start = datetime.fromisoformat(start)
            except ValueError as exc:
                raise InvalidInput(f"start_time {start!r:.40} is not ISO 8601") from exc
        try:
            trigger = RecurrenceTrigger(
                frequency=cast(Literal["minute", "hour", "day", "week", "month"], frequency),
                interval=self.interval,
                schedule=pattern,
                time_zone=self.time_zone or "UTC",
                start_time=start,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"recurrence: {exc}") from exc
        check_trigger(trigger)
        return trigger

    def __repr__(self) -> str:
        return f"ScheduleRecurrence(frequency={self.frequency!r}, interval={self.interval})"


class Schedule:
    """A schedule of the workspace: ``name`` (its id too), ``status`` (``"Active"`` or
    ``"Disabled"``), ``description``, the next due times and the last fires."""

    def __init__(self, workspace: WorkspaceBase, record: dict[str, Any]) -> None:
        self.workspace = workspace
        self._record = record

    @property
    def id(self) -> str:
        return str(self._record["name"])

    @property
    def name(self) -> str:
        return str(self._record["name"])

    @property
    def status(self) -> str:
        return "Active" if self._record["enabled"] else "Disabled"

    @property
    def description(self) -> str:
        return str(self._record.get("description") or "")

    @property
    def pipeline_id(self) -> str | None:
        """The published pipeline it runs (None: it runs a job)."""
        tags = (self._record.get("submission") or {}).get("tags") or {}
        found = tags.get(PUBLISHED_TAG)
        return str(found) if found else None

    @property
    def next_dues(self) -> builtins.list[str]:
        return list(self._record.get("next_dues") or [])

    @property
    def fires(self) -> builtins.list[dict[str, Any]]:
        """The last fires: due time, state, run id and status."""
        return list(self._record.get("fires") or [])

    @staticmethod
    @refuses(
        datastore=_DATASTORE_TRIGGER,
        polling_interval=_DATASTORE_TRIGGER,
        path_on_datastore=_DATASTORE_TRIGGER,
    )
    @inherent(
        wait_for_provisioning=_AT_ONCE,
        wait_timeout=_AT_ONCE,
    )
    def create(
        workspace: WorkspaceBase,
        name: str,
        pipeline_id: str | None = None,
        experiment_name: str | None = None,
        recurrence: ScheduleRecurrence | None = None,
        description: str | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        wait_for_provisioning: bool = False,
        wait_timeout: int = 3600,
        datastore: Any = None,
        polling_interval: int = 5,
        path_on_datastore: str | None = None,
        job: ScriptRunConfig | str | Path | None = None,
    ) -> Schedule:
        """Create schedule ``name`` submitting published pipeline ``pipeline_id`` (its
        parameters' values in ``pipeline_parameters``, the defaults for the rest) or ``job`` (a
        ``ScriptRunConfig``, or a job file's path) as a run of ``experiment_name`` on
        ``recurrence``."""
        if recurrence is None:
            raise InvalidInput("Schedule.create: recurrence= says when (a ScheduleRecurrence)")
        if pipeline_id is not None:
            if job is not None:
                raise InvalidInput("Schedule.create: give pipeline_id= or job=, not both")
            return _pipeline_schedule(
                workspace,
                name,
                pipeline_id,
                experiment_name or "default",
                recurrence,
                description or "",
                pipeline_parameters or {},
            )
        if pipeline_parameters is not None:
            raise InvalidInput("Schedule.create: pipeline_parameters= is for a pipeline_id=")
        if job is None:
            raise InvalidInput(
                "Schedule.create: job= (a ScriptRunConfig) or pipeline_id= names what to run"
            )
        tags: dict[str, str] = {}
        display_name = None
        if isinstance(job, (str, Path)):
            spec, config = load_job_file(Path(job))
            if spec.description:  # as the schedule file's create_job.description is
                raise InvalidInput(
                    f"{job}: description: a scheduled job's runs carry no description;"
                    " describe the schedule instead (description=)"
                )
            experiment_name = experiment_name or spec.experiment_name
            display_name = spec.display_name
            tags = {k: str(v) for k, v in spec.tags.items()}
        else:
            config = job
        trigger = recurrence.trigger()
        core = workspace.core

        async def go() -> dict[str, Any]:
            exp = await core.experiment(experiment_name or "default")
            submission = await exp.submission(config, tags=tags, display_name=display_name)
            return await core.schedules.create(
                name, trigger, submission, description=description or ""
            )

        return Schedule(workspace, workspace._run(go()))

    @staticmethod
    def get(workspace: WorkspaceBase, id: str) -> Schedule:
        """The schedule called ``id`` (a schedule's id is its name)."""
        return Schedule(workspace, workspace._run(workspace.core.schedules.get(id)))

    @staticmethod
    @refuses(
        pipeline_id="list them all and read each schedule's pipeline_id",
        pipeline_endpoint_id="a schedule runs a published pipeline, not an endpoint",
    )
    def list(
        workspace: WorkspaceBase,
        active_only: bool = True,
        pipeline_id: str | None = None,
        pipeline_endpoint_id: str | None = None,
    ) -> builtins.list[Schedule]:
        """The workspace's schedules (only the enabled ones unless ``active_only=False``)."""
        rows = workspace._run(workspace.core.schedules.list())
        return [Schedule(workspace, r) for r in rows if r["enabled"] or not active_only]

    @inherent(wait_for_provisioning=_AT_ONCE, wait_timeout=_AT_ONCE)
    def enable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        self.workspace._run(self.workspace.core.schedules.enable(self.name))
        self.refresh()

    @inherent(wait_for_provisioning=_AT_ONCE, wait_timeout=_AT_ONCE)
    def disable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        self.workspace._run(self.workspace.core.schedules.disable(self.name))
        self.refresh()

    def delete(self) -> None:
        self.workspace._run(self.workspace.core.schedules.delete(self.name))

    def refresh(self) -> None:
        self._record = self.workspace._run(self.workspace.core.schedules.get(self.name))

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, status={self.status!r})"


def _pipeline_schedule(
    workspace: WorkspaceBase,
    name: str,
    pipeline_id: str,
    experiment_name: str,
    recurrence: ScheduleRecurrence,
    description: str,
    parameters: dict[str, Any],
) -> Schedule:
    """A schedule of published pipeline ``pipeline_id``: its stored submission, the
    parameters filled now, stored as the schedule's."""
    trigger = recurrence.trigger()
    core = workspace.core

    async def go() -> dict[str, Any]:
        found = await published_pipeline(core, pipeline_id)
        stored = msgspec.convert(found["submission"], SubmitPipeline)
        given = {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in parameters.items()
        }
        filled = fill_parameters(stored, dict(found["parameters"]), given)
        await core.experiment_id(experiment_name)
        submission = msgspec.structs.replace(
            filled,
            experiment_name=experiment_name,
            display_name=filled.display_name or found["name"],
            tags={**filled.tags, PUBLISHED_TAG: pipeline_id},
        )
        return await core.schedules.create(name, trigger, submission, description=description)

    return Schedule(workspace, workspace._run(go()))
