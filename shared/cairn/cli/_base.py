"""Shared pieces of the command line: the group, settings, output tables."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cairn.log import configure_logging
from cairn.settings import Settings, load_settings

if TYPE_CHECKING:
    from cairn.sdk import Workspace

__all__ = [
    "SECTIONS",
    "SectionedGroup",
    "as_of_option",
    "cell",
    "cli",
    "emit",
    "format_table",
    "json_option",
    "parse_as_of",
    "run",
    "settings",
    "show",
    "sync_workspace",
    "table_width",
    "with_workspace",
    "yaml_file_option",
]

_C = TypeVar("_C", bound=Callable[..., Any])


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


# The sections of ``cairn --help``, by what people do; a command named nowhere is listed under
# "Other commands" (and the help test fails until it is placed).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Track experiments and runs": ("experiment", "run", "history"),
    "Run jobs": ("job", "component", "sweep", "schedule", "agent"),
    "Registry: models, environments, compute targets": ("model", "environment", "compute"),
    "Data": ("datastore", "dataset"),
    "Deploy models: online endpoints": ("online-endpoint", "online-deployment"),
    "Score in batches: batch endpoints": ("batch-endpoint", "batch-deployment"),
    "Secrets": ("secret",),
    "Automate on events": ("events", "webhook"),
    "Operate the stack": (
        "up",
        "studio",
        "serve",
        "status",
        "sync",
        "projection",
        "replay",
        "audit",
        "export",
        "import",
        "workspace",
        "user",
        "token",
        "role",
        "cluster",
        "backup",
        "restore",
    ),
}
OTHER_SECTION = "Other commands"


class SectionedGroup(click.Group):
    """A group whose help lists its commands in the sections of ``SECTIONS``."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = [
            (name, cmd)
            for name in self.list_commands(ctx)
            if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden
        ]
        if not commands:
            return
        order = {
            name: (i, j)
            for i, names in enumerate(SECTIONS.values())
            for j, name in enumerate(names)
        }
        titles = [*SECTIONS, OTHER_SECTION]
        width = max(len(name) for name, _ in commands)  # one column across the sections
        limit = formatter.width - 6 - width
        rows: dict[str, list[tuple[str, str]]] = {title: [] for title in titles}
        for name, cmd in sorted(commands, key=lambda c: order.get(c[0], (len(SECTIONS), 0))):
            title = titles[order[name][0]] if name in order else OTHER_SECTION
            rows[title].append((name.ljust(width), cmd.get_short_help_str(limit)))
        for title in titles:
            if rows[title]:
                with formatter.section(title):
                    formatter.write_dl(rows[title])


@click.group(
    cls=SectionedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def cli() -> None:
    """Cairn: experiments, runs and jobs, recorded as events in NATS JetStream.

    Start a local stack with 'cairn up' in one terminal; track, submit and inspect from another.
    'cairn COMMAND --help' explains a command, with an example. List commands print a table
    cut to fit the terminal (a cut value ends in "…"); --json prints everything, for scripts.

    \b
    Examples:
      cairn up
      cairn run list -e quickstart
      cairn job create --file job.yml --stream
      cairn model list --latest
      cairn agent --compute gpu --slots 2
    """


def table_width() -> int | None:
    """The width tables must fit: the terminal's (or $COLUMNS) when stdout is a terminal; None
    (no limit) when it is not, so that piped output is never cut."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def emit(data: Any, as_json: bool, columns: list[tuple[str, str]]) -> None:
    """``--json`` prints the data, complete; otherwise an aligned table of ``columns`` (key,
    header) that fits the terminal, a cut value ending in "…"."""
    if as_json:
        write_out(json.dumps(data, indent=2, default=str) + "\n")
        return
    rows = data if isinstance(data, list) else [data]
    lines, cut = format_table(rows, columns, table_width())
    write_out("".join(line + "\n" for line in lines))
    if cut:
        click.echo(CUT_HINT, err=True)


def write_out(text: str) -> None:
    """Write ``text`` to stdout whole. After the event loop has run, a large write to a pipe
    whose reader is slow can come back short (seen: 262,144 of 403,923 bytes, exit status 0,
    through ``click.echo``), so the bytes go to the descriptor in a loop until all are out.
    Where stdout is no descriptor (a test runner's buffer), ``click.echo`` writes it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        click.echo(text, nl=False)
        return
    sys.stdout.flush()
    data = memoryview(text.encode(sys.stdout.encoding or "utf-8", sys.stdout.errors or "strict"))
    while data:
        data = data[os.write(fd, data) :]


CUT_HINT = "(values ending in … were cut to fit the terminal; --json prints them whole)"


def format_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], width: int | None
) -> tuple[list[str], bool]:
    """The lines of the table, at most ``width`` wide (None: no limit) if the columns' floors
    allow, and whether a value was cut. The first column (the id or name to pass to the next
    command) stays whole if it takes at most half the width; the widest others give way first."""
    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    natural = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    widths = natural if width is None else _fit(natural, [h for _, h in columns], width)
    cut = any(len(c) > w for row_cells in cells for c, w in zip(row_cells, widths, strict=True))
    lines = [
        "  ".join(_clip(c, w).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [[h for _, h in columns], *cells]
    ]
    return lines, cut


_MIN_COLUMN = 8  # a cut column keeps at least this many characters (or its header's)


def _fit(natural: list[int], headers: list[str], width: int) -> list[int]:
    floors = [min(n, max(len(h), _MIN_COLUMN)) for n, h in zip(natural, headers, strict=True)]
    if natural and natural[0] <= width // 2:
        floors[0] = natural[0]
    gaps = 2 * (len(natural) - 1)

    def capped(cap: int) -> list[int]:
        return [max(min(n, cap), f) for n, f in zip(natural, floors, strict=True)]

    cap = max(natural, default=0)
    while cap > 1 and sum(capped(cap)) + gaps > width:
        cap -= 1
    return capped(cap)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def cell(value: Any) -> str:
    """A value on one line: None as "-", lists and dicts as JSON (complete: tables cut)."""
    if value is None:
        return "-"
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return " ".join(text.splitlines())


def show(data: dict[str, Any], as_json: bool, width: int = 16) -> None:
    """One record: JSON, or ``key value`` lines; on a terminal a long value wraps onto indented
    lines (nothing is cut)."""
    if as_json:
        emit(data, True, [])
        return
    limit = table_width()
    room = None if limit is None else max(limit - width - 1, 20)
    indent = " " * (width + 1)
    for key, value in data.items():
        text = cell(value) if isinstance(value, (dict, list)) else str(value)
        pieces = text.splitlines() or [""]
        if room is not None:
            pieces = [
                part
                for piece in pieces
                for part in textwrap.wrap(piece, room, break_on_hyphens=False) or [""]
            ]
        click.echo(f"{key:<{width}} {pieces[0]}".rstrip())
        for piece in pieces[1:]:
            click.echo(f"{indent}{piece}".rstrip())


async def with_workspace(fn: Any) -> Any:
    from cairn.sdk import connect

    async with connect(settings()) as ws:
        return await fn(ws)


def sync_workspace() -> Workspace:
    from cairn.sdk import Workspace

    return Workspace(settings())


def done(as_json: bool, data: dict[str, Any], *lines: str) -> None:
    """What an action did: ``data`` as one JSON object with ``--json``, else ``lines``."""
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    for line in lines:
        click.echo(line)


def json_option(f: Any) -> Any:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="print JSON (complete, never cut) instead of a table",
    )(f)


def parse_as_of(text: str | None) -> datetime | int | None:
    """``--as-of``: a stream sequence (digits) or an ISO 8601 time (no zone: local time)."""
    if text is None:
        return None
    if text.isdigit():
        if int(text) < 1:
            raise click.BadParameter("a stream sequence is 1 or more", param_hint="--as-of")
        return int(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is neither a sequence number nor an ISO 8601 time"
            " (e.g. 2026-11-29T14:05:00+00:00)",
            param_hint="--as-of",
        ) from exc


as_of_option = click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="SEQ|TIME",
    callback=lambda _ctx, _param, text: parse_as_of(text),
    help="as it was then, read from the log: a stream sequence or an ISO 8601 time",
)


def yaml_file_option(what: str = "the YAML file") -> Callable[[_C], _C]:
    """``--file/-f PATH`` (required), given to the command as ``path``."""
    option: Callable[[_C], _C] = click.option(
        "--file",
        "-f",
        "path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=what,
    )
    return option
