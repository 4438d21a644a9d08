"""Tracking: experiments and runs."""

from __future__ import annotations

from pathlib import Path

import click

from cairn.cli._base import cli, emit, json_option, run, show, with_workspace


@cli.group()
def experiment() -> None:
    """Experiments of the workspace."""


@experiment.command("list")
@json_option
def experiment_list(as_json: bool) -> None:
    rows = run(with_workspace(lambda ws: ws.experiments()))
    columns = [("name", "NAME"), ("runs", "RUNS"), ("created_at", "CREATED"), ("created_by", "BY")]
    emit(rows, as_json, columns)


@cli.group("run")
def run_group() -> None:
    """Runs: list, show, metrics, files, download."""


_RUN_COLUMNS = [
    ("run_id", "RUN"),
    ("display_name", "NAME"),
    ("status", "STATUS"),
    ("start_time", "STARTED"),
    ("end_time", "ENDED"),
]


@run_group.command("list")
@click.option("--experiment", "-e", "experiment_name", default=None)
@click.option("--limit", default=100, show_default=True)
@json_option
def run_list(experiment_name: str | None, limit: int, as_json: bool) -> None:
    rows = run(with_workspace(lambda ws: ws.runs(experiment_name, limit=limit)))
    emit(rows, as_json, [*_RUN_COLUMNS[:1], ("experiment_name", "EXPERIMENT"), *_RUN_COLUMNS[1:]])


@run_group.command("show")
@click.argument("run_id")
@json_option
def run_show(run_id: str, as_json: bool) -> None:
    show(run(with_workspace(lambda ws: ws.run(run_id).details())), as_json)


@run_group.command("metrics")
@click.argument("run_id")
@click.option("--name", "-n", default=None)
@json_option
def run_metrics(run_id: str, name: str | None, as_json: bool) -> None:
    metrics = run(with_workspace(lambda ws: ws.run(run_id).get_metrics(name)))
    if as_json:
        emit(metrics, True, [])
        return
    rows = [{"name": k, "value": v} for k, v in sorted(metrics.items())]
    emit(rows, False, [("name", "METRIC"), ("value", "VALUE")])


@run_group.command("files")
@click.argument("run_id")
@json_option
def run_files(run_id: str, as_json: bool) -> None:
    files = run(with_workspace(lambda ws: ws.run(run_id).files()))
    emit(files, as_json, [("path", "PATH"), ("size", "SIZE"), ("digest", "DIGEST")])


@run_group.command("download")
@click.argument("run_id")
@click.argument("path")
@click.option("--output", "-o", default=None, help="file or directory (default: ./<name>)")
@click.option("--progress/--no-progress", default=None)
def run_download(run_id: str, path: str, output: str | None, progress: bool | None) -> None:
    target = Path(output or Path(path).name)
    if target.is_dir():
        target = target / Path(path).name
    got = run(with_workspace(lambda ws: ws.run(run_id).download_file(path, target, progress)))
    click.echo(str(got))
