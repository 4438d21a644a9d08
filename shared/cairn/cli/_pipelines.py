"""Pipelines on the command line: submitting a pipeline job file, following its steps, and
showing a pipeline run's steps (``cairn job create`` and ``cairn job show`` call these)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import emit, run, show, with_workspace

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
        found = await pipeline_run.pipeline()
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
    from cairn.sdk import load_pipeline_file, submit_pipeline

    loaded = load_pipeline_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
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


def show_pipeline(details: dict[str, Any], pipeline: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit({**details, "pipeline": pipeline}, True, [])
        return
    show({**details, "steps": len(pipeline["steps"])}, False)
    click.echo("")
    emit(pipeline["steps"], False, STEP_COLUMNS)
