"""Shared pieces of the command line: the group, settings, output tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import click

from cairn.log import configure_logging
from cairn.settings import Settings, load_settings

if TYPE_CHECKING:
    from cairn.sdk import Workspace

__all__ = ["cli", "emit", "json_option", "run", "settings", "sync_workspace", "with_workspace"]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def settings(**overrides: Any) -> Settings:
    loaded = load_settings(**overrides)
    configure_logging(loaded.log_format, loaded.log_level)
    return loaded


@click.group()
def cli() -> None:
    """Cairn: experiments, runs and jobs, recorded as events in NATS JetStream."""


def emit(data: Any, as_json: bool, columns: list[tuple[str, str]]) -> None:
    """``--json`` prints the data; otherwise an aligned table of ``columns`` (key, header)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    click.echo("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)).rstrip())
    for row_cells in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row_cells, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:60]
    return str(value)


def show(data: dict[str, Any], as_json: bool, width: int = 16) -> None:
    """One record: JSON, or ``key value`` lines."""
    if as_json:
        emit(data, True, [])
        return
    for key, value in data.items():
        click.echo(f"{key:<{width}} {cell(value) if isinstance(value, (dict, list)) else value}")


async def with_workspace(fn: Any) -> Any:
    from cairn.sdk import connect

    async with connect(settings()) as ws:
        return await fn(ws)


def sync_workspace() -> Workspace:
    from cairn.sdk import Workspace

    return Workspace(settings())


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
