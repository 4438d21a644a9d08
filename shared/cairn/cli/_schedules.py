"""Schedules: create (from a YAML file), list, show, disable, enable, delete."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import (
    cli,
    done,
    emit,
    json_option,
    run,
    show,
    with_workspace,
    yaml_file_option,
)

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace


@cli.group()
def schedule() -> None:
    """Schedules: jobs submitted on a cron expression, a recurrence, or an event.

    \b
    Examples:
      cairn schedule create --file schedule.yml
      cairn schedule show nightly
      cairn schedule disable nightly
    """


_FILE = yaml_file_option("the schedule's YAML file")


def _apply(path: Path, as_json: bool, *, update: bool) -> None:
    from cairn.sdk import load_schedule_file

    definition = load_schedule_file(path)
    spec, job = definition.file, definition.job

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        tags = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in job.tags.items()}
        exp = await ws.experiment(job.experiment_name or "default")
        submission = await exp.submission(
            definition.config, tags=tags, display_name=job.display_name
        )
        fields: dict[str, Any] = {
            "catch_up": spec.catch_up,
            "display_name": spec.display_name,
            "description": spec.description or "",
            "tags": definition.tags,
        }
        if update:
            await ws.schedules.update(
                spec.name, trigger=definition.trigger, submission=submission, **fields
            )
            switch = ws.schedules.enable if spec.is_enabled else ws.schedules.disable
            await switch(spec.name)
            return await ws.schedules.get(spec.name)
        return await ws.schedules.create(
            spec.name, definition.trigger, submission, enabled=spec.is_enabled, **fields
        )

    record = run(with_workspace(go))
    dues = record.get("next_dues") or []
    verb = "updated" if update else "created"
    done(as_json, record, f"schedule {record['name']} {verb}", *(f"next: {d}" for d in dues[:3]))


@schedule.command("create")
@_FILE
@json_option
def schedule_create(path: Path, as_json: bool) -> None:
    """Create a schedule from a YAML file.

    The file has the Azure ML CLI v2 shape: name, display_name, description, tags, trigger
    (cron, recurrence, or event: a new dataset version, a moved model alias) and create_job
    (a job file, or the job inline), plus catch_up (once, the default, or skip). The job's
    code is uploaded and its environment pinned now. Prints the next due times.

    \b
    Example:
      cairn schedule create --file schedule.yml
    """
    _apply(path, as_json, update=False)


@schedule.command("update")
@_FILE
@json_option
def schedule_update(path: Path, as_json: bool) -> None:
    """Update the schedule a YAML file names to what the file says.

    The job is uploaded and its environment pinned again; a changed trigger counts from now
    (what the old one had due is not caught up); is_enabled (default true) enables or
    disables it.

    \b
    Example:
      cairn schedule update --file schedule.yml
    """
    _apply(path, as_json, update=True)


_COLUMNS = [
    ("name", "NAME"),
    ("enabled", "ENABLED"),
    ("trigger_type", "TRIGGER"),
    ("next_due", "NEXT"),
    ("catch_up", "CATCH-UP"),
    ("display_name", "DISPLAY NAME"),
]


@schedule.command("list")
@json_option
def schedule_list(as_json: bool) -> None:
    """List the workspace's schedules.

    One line per schedule: name, enabled, trigger type, next due time, catch-up, display name.
    """
    rows = run(with_workspace(lambda ws: ws.schedules.list()))
    for row in rows:
        row["trigger_type"] = (row.get("trigger") or {}).get("type")
    emit(rows, as_json, _COLUMNS)


@schedule.command("show")
@click.argument("name")
@click.option("--fires", default=10, show_default=True, help="how many of the last fires")
@json_option
def schedule_show(name: str, fires: int, as_json: bool) -> None:
    """Show schedule NAME: its trigger, next due times, and last fires with their runs.

    \b
    Example:
      cairn schedule show nightly --fires 20
    """
    shown = run(with_workspace(lambda ws: ws.schedules.get(name, fires=fires)))
    if as_json:
        show(shown, True)
        return
    record = {k: v for k, v in shown.items() if k not in ("fires", "next_dues", "submission")}
    show(record, False)
    click.echo("next due times:")
    for due in shown["next_dues"] or ["(none)"]:
        click.echo(f"  {due}")
    click.echo("last fires:")
    rows = [
        {**f, "covers": f"≥{f['covers']}"} if f.get("covers_at_least") else f
        for f in shown["fires"]
    ]
    emit(
        rows,
        False,
        [
            ("due", "DUE"),
            ("state", "STATE"),
            ("covers", "COVERS"),
            ("run_id", "RUN"),
            ("run_status", "STATUS"),
            ("error", "ERROR"),
        ],
    )


def _action(verb: str, name: str, as_json: bool) -> None:
    async def go(ws: AsyncWorkspace) -> Any:
        return await getattr(ws.schedules, verb)(name)

    reply = run(with_workspace(go))
    done(as_json, {"name": name, "seq": reply.seq}, f"schedule {name} {verb}d")


@schedule.command("disable")
@click.argument("name")
@json_option
def schedule_disable(name: str, as_json: bool) -> None:
    """Stop schedule NAME firing (due times while disabled are never caught up)."""
    _action("disable", name, as_json)


@schedule.command("enable")
@click.argument("name")
@json_option
def schedule_enable(name: str, as_json: bool) -> None:
    """Let schedule NAME fire again, from now on."""
    _action("enable", name, as_json)


@schedule.command("delete")
@click.argument("name")
@json_option
def schedule_delete(name: str, as_json: bool) -> None:
    """Delete schedule NAME (its fires and runs stay in the log)."""
    _action("delete", name, as_json)
