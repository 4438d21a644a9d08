"""Tracking: experiments and runs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import click

from cairn.cli._base import (
    as_of_option,
    cli,
    emit,
    json_option,
    run,
    show,
    with_workspace,
)
from cairn.proto.commands import MAX_RUNS_PAGE


@cli.group()
def experiment() -> None:
    """Experiments: the named groups of runs.

    An experiment is created by the first run logged or submitted into it.

    \b
    Example:
      cairn experiment list
    """


@experiment.command("list")
@click.option(
    "--archived",
    type=click.Choice(["no", "only", "all"]),
    default="no",
    show_default=True,
    help="list the active experiments, the archived ones, or all",
)
@as_of_option
@json_option
def experiment_list(
    archived: Literal["no", "only", "all"], as_of: datetime | int | None, as_json: bool
) -> None:
    """List experiments.

    The experiments of the workspace, with their run counts (archived ones only when asked);
    with --as-of, those the log held then, with their runs then.

    \b
    Examples:
      cairn experiment list --archived all --json
      cairn experiment list --as-of 2026-11-29T14:05:00Z
    """
    rows = run(with_workspace(lambda ws: ws.experiments(archived, as_of=as_of)))
    columns = [("name", "NAME"), ("runs", "RUNS"), ("created_at", "CREATED"), ("created_by", "BY")]
    if archived != "no":
        columns.append(("archived", "ARCHIVED"))
    emit(rows, as_json, columns)


@experiment.command("show")
@click.argument("name")
@as_of_option
@json_option
def experiment_show(name: str, as_of: datetime | int | None, as_json: bool) -> None:
    """Show one experiment.

    Experiment NAME's id, creation, archived flag and number of runs; with --as-of, as the
    log held it then (an experiment that did not exist then is not found).

    \b
    Examples:
      cairn experiment show quickstart
      cairn experiment show quickstart --as-of 1200
    """
    show(run(with_workspace(lambda ws: ws.get_experiment(name, as_of=as_of))), as_json)


@cli.group("run")
def run_group() -> None:
    """Runs: list, show, metrics, files, download.

    A run is one execution of a training script, logged with the SDK or submitted as a job.

    \b
    Examples:
      cairn run list -e quickstart
      cairn run metrics RUN_ID -n loss
    """


_RUN_COLUMNS = [
    ("run_id", "RUN"),
    ("display_name", "NAME"),
    ("status", "STATUS"),
    ("start_time", "STARTED"),
    ("end_time", "ENDED"),
]


@run_group.command("list")
@click.option(
    "--experiment",
    "-e",
    "experiment_name",
    default=None,
    help="only the runs of this experiment (default: every experiment)",
)
@click.option(
    "--filter",
    "-f",
    "filter_",
    default="",
    help="e.g. \"metrics.loss.min < 0.2 AND tags.team = 'a'\" (grammar: docs/design.md)",
)
@click.option(
    "--order-by",
    "-o",
    "order_by",
    multiple=True,
    help="a column and ASC or DESC, e.g. 'metrics.loss.min ASC'; repeat for more keys"
    " (default: created_at DESC)",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(1, MAX_RUNS_PAGE),
    help="at most this many runs (default 100); with --all, how many per page (default"
    f" {MAX_RUNS_PAGE})",
)
@click.option("--cursor", default=None, help="go on where an earlier listing stopped")
@click.option("--all", "all_", is_flag=True, help="every matching run, page after page")
@as_of_option
@json_option
def run_list(
    experiment_name: str | None,
    filter_: str,
    order_by: tuple[str, ...],
    limit: int | None,
    cursor: str | None,
    all_: bool,
    as_of: datetime | int | None,
    as_json: bool,
) -> None:
    """List runs, newest first.

    One line per run: id, experiment, name, status, start and end. When more runs match
    than were printed, a last line on stderr says how many, with the --cursor that goes on.
    With --as-of, the runs the log held then, as they were then (no metrics in --filter or
    --order-by then).

    \b
    Examples:
      cairn run list -e quickstart --limit 20
      cairn run list -e sweep -f "metrics.loss < 0.2" -o "metrics.loss.min ASC"
      cairn run list -e sweep --all --json
      cairn run list -e quickstart --as-of 2026-11-29T14:05:00Z
    """
    query: dict[str, Any] = {"filter": filter_, "order_by": order_by, "as_of": as_of}

    async def listing(ws: Any) -> tuple[list[dict[str, Any]], str | None, int]:
        rows: list[dict[str, Any]] = []
        size = limit or (MAX_RUNS_PAGE if all_ else 100)
        page = await ws.runs_page(experiment_name, **query, limit=size, cursor=cursor)
        rows.extend(page["runs"])
        while all_ and page["next_cursor"] is not None:
            page = await ws.runs_page(
                experiment_name, **query, limit=size, cursor=page["next_cursor"]
            )
            rows.extend(page["runs"])
        after = page["next_cursor"]
        if after is None:
            return rows, None, 0
        # how many more: one counting read, only when there are more
        probe = await ws.runs_page(experiment_name, **query, limit=1, cursor=after, count=True)
        return rows, after, len(probe["runs"]) + probe["remaining"]

    rows, after, more = run(with_workspace(listing))
    columns = [*_RUN_COLUMNS[:1], ("experiment_name", "EXPERIMENT"), *_RUN_COLUMNS[1:]]
    emit(rows, as_json, columns)
    if after is not None:
        click.echo(f"… {more:,} more: --limit, --all, or --cursor {after}", err=True)


@run_group.command("show")
@click.argument("run_id")
@as_of_option
@json_option
def run_show(run_id: str, as_of: datetime | int | None, as_json: bool) -> None:
    """Show one run.

    Run RUN_ID's experiment, name, status, times, error, tags and properties; with --as-of,
    as they were at that moment.

    \b
    Example:
      cairn run show RUN_ID
      cairn run show RUN_ID --as-of 2026-11-29T14:05:00Z
    """
    show(run(with_workspace(lambda ws: ws.run(run_id).details(as_of=as_of))), as_json)


@run_group.command("metrics")
@click.argument("run_id")
@click.option("--name", "-n", default=None, help="only this metric (default: every metric)")
@as_of_option
@json_option
def run_metrics(run_id: str, name: str | None, as_of: datetime | int | None, as_json: bool) -> None:
    """Show a run's metrics.

    The metrics of run RUN_ID: a single value, or the whole series of a metric logged
    more than once.

    \b
    Example:
      cairn run metrics RUN_ID -n loss --json
    """
    metrics = run(with_workspace(lambda ws: ws.run(run_id).get_metrics(name, as_of=as_of)))
    if as_json:
        emit(metrics, True, [])
        return
    rows = [{"name": k, "value": v} for k, v in sorted(metrics.items())]
    emit(rows, False, [("name", "METRIC"), ("value", "VALUE")])


@run_group.command("files")
@click.argument("run_id")
@as_of_option
@json_option
def run_files(run_id: str, as_of: datetime | int | None, as_json: bool) -> None:
    """List a run's files.

    The files of run RUN_ID (outputs and logs): path, size, digest.

    \b
    Example:
      cairn run files RUN_ID
    """
    files = run(with_workspace(lambda ws: ws.run(run_id).files(as_of=as_of)))
    emit(files, as_json, [("path", "PATH"), ("size", "SIZE"), ("digest", "DIGEST")])


@run_group.command("download")
@click.argument("run_id")
@click.argument("path")
@click.option("--output", "-o", default=None, help="file or directory (default: ./<name>)")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="show a progress bar while a large file downloads",
)
def run_download(run_id: str, path: str, output: str | None, progress: bool | None) -> None:
    """Download a file of a run.

    Downloads file PATH of run RUN_ID (as 'cairn run files' lists it) and prints where it
    went.

    \b
    Example:
      cairn run download RUN_ID outputs/model.pkl -o models/
    """
    target = Path(output or Path(path).name)
    if target.is_dir():
        target = target / Path(path).name
    got = run(with_workspace(lambda ws: ws.run(run_id).download_file(path, target, progress)))
    click.echo(str(got))


_HISTORY_KINDS = [
    "run",
    "experiment",
    "model",
    "dataset",
    "environment",
    "datastore",
    "compute",
    "schedule",
    "workspace",
]
_HISTORY_COLUMNS = [
    ("seq", "SEQ"),
    ("time", "TIME"),
    ("event", "EVENT"),
    ("actor", "ACTOR"),
    ("command_id", "COMMAND"),
    ("details", "DETAILS"),
]


@cli.command()
@click.argument("kind", type=click.Choice(_HISTORY_KINDS))
@click.argument("name")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, help="only events after this sequence"
)
@json_option
def history(kind: str, name: str, after: int, as_json: bool) -> None:
    """An entity's events, in order, from the log.

    Every event of entity NAME of kind KIND (a run by its id; a model, dataset,
    environment, datastore, compute target, schedule or experiment by its name; the
    workspace by its own name): its sequence, time, type, the actor who
    caused it, the command that did (the same id on every event one command made) and what
    it recorded. --json adds each event's correlation id (the request a service's own
    decision follows from) and its data whole.

    \b
    Example:
      cairn history model churn
      cairn history run RUN_ID --json
    """
    events = run(with_workspace(lambda ws: ws.history(kind, name, after_seq=after)))
    if as_json:
        emit(events, True, [])
        return
    for event in events:
        event["details"] = json.dumps(event["data"], separators=(",", ":"), default=str)
    emit(events, False, _HISTORY_COLUMNS)
