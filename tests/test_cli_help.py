"""The command line explains itself: every group, command, option and argument has help in
plain text, ``cairn --help`` groups the commands by what people do, and tables fit the
terminal, marking what they cut, while ``--json`` stays complete. No server is needed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cairn.cli import cli
from cairn.cli._base import CUT_HINT, SECTIONS, emit, format_table, show, table_width
from cairn.embedded._up import all_services


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


PATHS = list(_walk(cli))

# the commands people start with: their help shows a one-line example
COMMON = [
    ("experiment", "list"),
    ("run", "list"),
    ("run", "show"),
    ("run", "metrics"),
    ("run", "download"),
    ("job", "create"),
    ("job", "list"),
    ("job", "logs"),
    ("model", "register"),
    ("model", "list"),
    ("model", "download"),
    ("environment", "create"),
    ("datastore", "create"),
    ("datastore", "upload"),
    ("dataset", "create"),
    ("dataset", "download"),
    ("compute", "create"),
]


def test_the_walk_sees_the_whole_tree() -> None:
    assert len(PATHS) > 40
    for path in [("run", "list"), ("job", "create"), ("serve",), ("agent", "list")]:
        assert path in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(("cairn", *p)))
def test_every_command_option_and_argument_has_plain_help(path: tuple[str, ...]) -> None:
    command = _command(path)
    where = " ".join(("cairn", *path))
    text = (command.help or "").strip()
    assert text, f"{where} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"{where} {param.opts[0]} has no help text"
            assert "`" not in (param.help or ""), f"{where} {param.opts[0]}: markup in its help"
        elif isinstance(param, click.Argument):  # click shows no help for arguments: the
            name = param.human_readable_name  # command's text names them
            assert name in text, f"{where}: its help does not explain argument {name}"
    shown = _help(*path)
    assert "`" not in shown, f"{where} --help shows markup:\n{shown}"
    assert "\b" not in shown, f"{where} --help shows a raw \\b:\n{shown}"


@pytest.mark.parametrize("path", COMMON, ids=lambda p: " ".join(("cairn", *p)))
def test_common_commands_show_an_example(path: tuple[str, ...]) -> None:
    shown = _help(*path)
    assert "Example" in shown and f"cairn {' '.join(path)} " in shown, shown


def test_top_level_help_groups_commands_by_what_people_do() -> None:
    shown = _help()
    placed = {name for names in SECTIONS.values() for name in names}
    assert isinstance(cli, click.Group)
    unplaced = sorted(set(cli.commands) - placed)
    assert not unplaced, f"commands in no section of cairn --help: {unplaced}"
    for title in ["Track experiments and runs", "Run jobs", "Registry", "Data", "Operate"]:
        assert title in shown, shown
    at = {name: shown.index(f"\n  {name} ") for name in cli.commands}
    titles = {title: shown.index(f"\n{title}:") for title in SECTIONS if title in shown}
    for title, names in SECTIONS.items():
        for name in (n for n in names if n in at):
            before = [t for t, i in titles.items() if i < at[name]]
            assert before and before[-1] == title, f"{name} is not under {title}:\n{shown}"
    assert "cairn run list -e quickstart" in shown and "cairn up" in shown


def test_serve_help_lists_the_services() -> None:
    shown = _help("serve")
    for service in all_services():
        assert service in shown, shown


# -- tables ------------------------------------------------------------------------------------

LOSS = [1, 0.5, 0.3333333333333333, 0.25, 0.2, 0.16666666666666666, 0.14285714285714285]
ROWS: list[dict[str, Any]] = [{"name": "loss", "value": LOSS}, {"name": "acc", "value": 0.9}]
COLUMNS = [("name", "METRIC"), ("value", "VALUE")]


def test_a_table_fits_the_width_and_marks_what_it_cuts() -> None:
    lines, cut = format_table(ROWS, COLUMNS, 40)
    assert cut and all(len(line) <= 40 for line in lines), lines
    assert lines[1].startswith("loss") and lines[1].endswith("…"), lines
    assert lines[2].split() == ["acc", "0.9"]


def test_a_table_without_a_width_cuts_nothing() -> None:
    lines, cut = format_table(ROWS, COLUMNS, None)
    assert not cut and json.dumps(LOSS) in lines[1] and "…" not in "".join(lines)


def test_the_widest_column_gives_way_first() -> None:
    rows: list[dict[str, Any]] = [{"id": "a" * 32, "spec": {"packages": ["numpy"] * 20}}]
    lines, cut = format_table(rows, [("id", "ID"), ("spec", "SPEC")], 80)
    assert cut and "a" * 32 in lines[1] and len(lines[1]) == 80, lines


def test_the_first_column_stays_whole() -> None:
    rows: list[dict[str, Any]] = [{"id": "b" * 32, "status": "Running", "command": "x" * 60}]
    columns = [("id", "RUN"), ("status", "STATUS"), ("command", "COMMAND")]
    lines, cut = format_table(rows, columns, 64)
    assert cut and lines[1].startswith("b" * 32 + "  Running") and lines[1].endswith("…")
    assert len(lines[1]) == 64, lines


def test_a_cell_keeps_to_one_line() -> None:
    lines, _ = format_table([{"error": "first\nsecond"}], [("error", "ERROR")], None)
    assert lines[1] == "first second"


def _terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout (as capsys has it while the test runs) is a 40-column terminal."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "40")


def test_emit_on_a_terminal_cuts_with_a_mark_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _terminal(monkeypatch)
    assert table_width() == 40
    emit(ROWS, False, COLUMNS)
    out, err = capsys.readouterr()
    assert "…" in out and all(len(line) <= 40 for line in out.splitlines()), out
    assert CUT_HINT in err


def test_json_is_never_cut(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _terminal(monkeypatch)
    emit(ROWS, True, COLUMNS)
    out, err = capsys.readouterr()
    assert json.loads(out) == ROWS and "…" not in out and not err


def test_piped_output_is_not_cut(capsys: pytest.CaptureFixture[str]) -> None:
    assert table_width() is None
    emit(ROWS, False, COLUMNS)
    out, err = capsys.readouterr()
    assert json.dumps(LOSS) in out and "…" not in out and not err


def test_show_wraps_a_long_value_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _terminal(monkeypatch)
    error = "the job failed: " + "x" * 70
    show({"status": "Failed", "error": error}, False, width=8)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["status", "Failed"]
    assert all(len(line) <= 40 for line in out), out
    assert "".join(line[9:] for line in out[1:]).replace(" ", "") == error.replace(" ", "")


#: commands without --json, and why: long-running, streaming, or their output is files
NO_JSON = {
    "up": "runs the stack until stopped",
    "serve": "runs a service until stopped",
    "job logs": "streams the job's output as it comes",
    "cluster certs": "writes certificate files and prints the config to paste",
    "datastore upload": "moves files; a bar on a terminal",
    "datastore download": "writes files; a bar on a terminal",
    "dataset download": "writes files; a bar on a terminal",
    "run download": "writes files; a bar on a terminal",
    "model download": "writes files; a bar on a terminal",
    "online-endpoint get-credentials": "prints the keys, as Azure's CLI does: JSON always",
    "online-endpoint invoke": "prints the deployment's answer, JSON always",
    "online-deployment get-logs": "prints the replicas' output as it is",
}


def test_every_command_that_answers_has_json() -> None:
    """Scripts read every answer as JSON: each command has --json, but those listed (with
    the reason) in NO_JSON."""
    import click

    from cairn.cli import cli

    missing = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        options = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--json" not in options and " ".join(path) not in NO_JSON:
            missing.append(" ".join(path))

    walk(cli, [])
    assert missing == []
