"""Pipelines on the command line: submitting a pipeline job file, following its steps, and
showing a pipeline run's steps (``cairn job create`` and ``cairn job show`` call these)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, emit, json_option, run, show, with_workspace
from cairn.errors import Unavailable

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

__all__ = ["create_pipeline", "is_pipeline_file", "show_pipeline"]

_TERMINAL = ("Completed", "Failed", "Canceled")
STEP_COLUMNS = [
    ("step", "STEP"),
    ("status", "STATUS"),
    ("duration_s", "SECONDS"),
    ("run_id", "RUN"),
    ("reused_run_id", "REUSES"),
    ("error", "ERROR"),
]


def is_pipeline_file(path: Path) -> bool:
    """Whether the YAML file says ``type: pipeline`` (anything unreadable is left to the
    command job loader, which says what is wrong)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "pipeline"


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _line(step: dict[str, Any]) -> str:
    status, name = step["status"], step["step"]
    text = f"[{name}] {status}"
    if step.get("run_id"):
        text += f" (run {step['run_id']})"
    if step.get("reused_run_id"):
        text += f": reuses run {step['reused_run_id']}"
    if step.get("duration_s") is not None:
        text += f" in {step['duration_s']:.1f} s"
    if step.get("error"):
        text += f": {step['error']}"
    return text


async def follow_pipeline(ws: AsyncWorkspace, run_id: str, *, quiet: bool) -> dict[str, Any]:
    """Print each step's state as it changes, and a step's output once it ends; return the
    pipeline when it has ended."""
    pipeline_run = ws.run(run_id)
    shown: dict[str, str] = {}
    while True:
        try:
            found = await pipeline_run.pipeline()
        except Unavailable:  # the orchestrator is restarting: the pipeline goes on
            await asyncio.sleep(1.0)
            continue
        for step in found["steps"]:
            if shown.get(step["step"]) == step["status"]:
                continue
            shown[step["step"]] = step["status"]
            if quiet:
                continue
            click.echo(_line(step), err=True)
            ended = step["status"] in _TERMINAL and not step.get("reused_run_id")
            if ended and step.get("run_id"):
                click.echo(f"--- output of {step['step']} ---", err=True)
                await ws.run(step["run_id"]).print_logs(_out)
        if found["status"] in _TERMINAL:
            if not quiet:
                error = f": {found['error']}" if found.get("error") else ""
                click.echo(f"pipeline {run_id} {found['status']}{error}", err=True)
            return found
        await asyncio.sleep(0.3)


def create_pipeline(path: Path, stream: bool, as_json: bool) -> None:
    from cairn.sdk import load_pipeline_file, lookup_components, submit_pipeline

    if not _names_registered(path):  # checked before connecting
        load_pipeline_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        loaded = load_pipeline_file(path, await lookup_components(ws, path))
        sent = await submit_pipeline(ws, loaded)
        if not stream:
            return {"run_id": sent.run_id, "status": "Running"}
        steps = ", ".join(s.name for s in sent.pipeline.steps)
        if not as_json:
            click.echo(f"pipeline {sent.run_id} submitted: {steps}", err=True)
        started = time.monotonic()
        found = await follow_pipeline(ws, sent.run_id, quiet=as_json)
        found["wall_s"] = round(time.monotonic() - started, 3)
        return found

    result = run(with_workspace(go))
    if as_json:
        emit(result, True, [])
    elif not stream:
        click.echo(result["run_id"])
    elif result["status"] != "Completed":
        sys.exit(1)


def _names_registered(path: Path) -> bool:
    """Whether a step names a registered component (checked once they are looked up)."""
    import yaml

    from cairn.sdk import registered_reference

    jobs = (yaml.safe_load(path.read_text()) or {}).get("jobs") or {}
    refs = [s.get("component") for s in jobs.values() if isinstance(s, dict)]
    return any(isinstance(r, str) and registered_reference(r) is not None for r in refs)


def show_pipeline(details: dict[str, Any], pipeline: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit({**details, "pipeline": pipeline}, True, [])
        return
    show({**details, "steps": len(pipeline["steps"])}, False)
    click.echo("")
    emit(pipeline["steps"], False, STEP_COLUMNS)


@cli.group()
def component() -> None:
    """Components: create (from a command component YAML file), list, show.

    A registered component is a step a pipeline names (component: azureml:train:1, or
    train@latest): its command, code, environment and typed inputs and outputs. Each
    registration of a name with a changed definition adds a version.

    \b
    Examples:
      cairn component create --file train.yml
      cairn component show train --version 2
    """


@component.command("create")
@click.option(
    "--file",
    "-f",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the command component's YAML file",
)
@click.option("--name", default=None, help="register under this name (default: the file's)")
@json_option
def component_create(path: Path, name: str | None, as_json: bool) -> None:
    """Register a command component from a YAML file.

    Uploads its code and registers it as the next version of its name; prints name:version.

    \b
    Example:
      cairn component create --file train.yml
    """
    from cairn.sdk import register_component_file

    record = run(with_workspace(lambda ws: register_component_file(ws, path, name)))
    if as_json:
        emit(record, True, [])
    else:
        click.echo(f"{record['name']}:{record['version']}")


@component.command("list")
@json_option
def component_list(as_json: bool) -> None:
    """List components: the latest version of each.

    \b
    Example:
      cairn component list
    """
    rows = run(with_workspace(lambda ws: ws.assets.list("component")))
    emit(rows, as_json, [("name", "NAME"), ("version", "VERSION"), ("description", "DESCRIPTION")])


@component.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@json_option
def component_show(name: str, version: int | None, as_json: bool) -> None:
    """Show one component version with its definition.

    Version --version (default: the latest) of component NAME: its command, inputs,
    outputs, environment and code snapshot.

    \b
    Example:
      cairn component show train --json
    """
    found = run(with_workspace(lambda ws: ws.assets.get("component", name, version)))
    show(found, as_json)
