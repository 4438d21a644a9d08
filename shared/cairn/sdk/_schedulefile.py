"""Schedules from YAML in the shape of the Azure ML CLI v2 (``cairn schedule create --file``).

::

    $schema: https://azuremlschemas.azureedge.net/latest/schedule.schema.json
    name: nightly-train
    display_name: Nightly training
    trigger:
      type: cron              # or recurrence (frequency, interval, schedule), or event
      expression: "0 2 * * *"
      time_zone: Europe/Berlin
      start_time: "2026-01-01T00:00:00"
    catch_up: once            # or skip: what fires missed while no service ran become
    create_job: ./job.yml     # or the job inline

An event trigger's ``on:`` key (which YAML 1.1 reads as the boolean true) is taken as written.
Every key is checked: an unknown one, a bad cron expression, an unknown frequency or time
zone, an end before the start is an error that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from cairn.domain.triggers import check_trigger
from cairn.errors import InvalidInput
from cairn.proto.schedules import Trigger
from cairn.sdk._jobfile import JobFile, load_job_doc
from cairn.sdk._jobs import ScriptRunConfig

__all__ = ["ScheduleDefinition", "ScheduleFile", "load_schedule_file"]

_SCHEDULE_SCHEMA = "schedule.schema.json"


class ScheduleFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    name: str
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    trigger: dict[str, Any]
    create_job: str | dict[str, Any]
    catch_up: Literal["once", "skip"] = "once"
    is_enabled: bool = True


class ScheduleDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """A checked schedule file: its keys, the trigger, and the job it submits."""

    file: ScheduleFile
    trigger: Trigger
    job: JobFile
    config: ScriptRunConfig

    @property
    def tags(self) -> dict[str, str]:
        return {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.file.tags.items()
        }


def _read(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc}") from exc


def _trigger(raw: dict[str, Any], path: Path) -> Trigger:
    try:
        trigger: Trigger = msgspec.convert(raw, Trigger)
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`$", "`trigger")
        if "type" not in raw:
            text = "trigger.type: one of cron, recurrence, event"
        raise InvalidInput(f"{path}: {text}") from exc
    try:
        check_trigger(trigger)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}") from exc
    return trigger


def load_schedule_file(path: Path) -> ScheduleDefinition:
    """Read and check a schedule file and the job it creates."""
    doc = _read(path, "schedule file")
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a schedule file is a mapping of keys")
    trigger_doc = doc.get("trigger")
    if isinstance(trigger_doc, dict) and True in trigger_doc:  # YAML 1.1 reads ``on:`` as true
        trigger_doc["on"] = trigger_doc.pop(True)
    try:
        spec = msgspec.convert(doc, ScheduleFile)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    if spec.schema is not None and not spec.schema.endswith(_SCHEDULE_SCHEMA):
        raise InvalidInput(f"{path}: $schema {spec.schema!r} is not a schedule's schema")
    trigger = _trigger(spec.trigger, path)
    if isinstance(spec.create_job, str):
        job_path = path.parent / spec.create_job.removeprefix("file:")
        job, config = load_job_doc(_read(job_path, "job file"), job_path)
    else:
        job, config = load_job_doc(spec.create_job, path)
    if job.description:
        raise InvalidInput(
            f"{path}: create_job.description: a scheduled job's runs carry no description;"
            " describe the schedule instead"
        )
    return ScheduleDefinition(file=spec, trigger=trigger, job=job, config=config)
