"""Moving data: datastore upload, download and ls; datasets create, list, show, download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, emit, json_option, run, show, sync_workspace, with_workspace
from cairn.cli._registry import _assets, datastore

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace


@datastore.command("upload")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--target-path", "-t", default="", help="folder inside the datastore")
@click.option("--overwrite", is_flag=True, help="replace files that exist")
@click.option("--progress/--no-progress", default=True)
def datastore_upload(
    name: str, source: Path, target_path: str, overwrite: bool, progress: bool
) -> None:
    """Upload a file or a folder (recursively) into datastore NAME."""
    from cairn.sdk import Datastore

    store = Datastore.get(sync_workspace(), name)
    if source.is_dir():
        store.upload(source, target_path, overwrite=overwrite, show_progress=progress)
    else:
        files = [str(source)]
        store.upload_files(
            files, target_path=target_path, overwrite=overwrite, show_progress=progress
        )
    click.echo(f"uploaded {source} to {name}:{target_path or '/'}")


@datastore.command("download")
@click.argument("name")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--prefix", "-p", default="", help="only files under this folder")
@click.option("--overwrite", is_flag=True)
@click.option("--progress/--no-progress", default=True)
def datastore_download(
    name: str, target: Path, prefix: str, overwrite: bool, progress: bool
) -> None:
    """Download the files of datastore NAME (under --prefix) into TARGET."""
    from cairn.sdk import Datastore

    count = Datastore.get(sync_workspace(), name).download(target, prefix, overwrite, progress)
    click.echo(f"downloaded {count} files to {target}")


@datastore.command("ls")
@click.argument("name")
@click.argument("prefix", default="")
@json_option
def datastore_ls(name: str, prefix: str, as_json: bool) -> None:
    """The files of datastore NAME under PREFIX."""
    from cairn.sdk import Datastore

    files = Datastore.get(sync_workspace(), name).list_files(prefix)
    emit(files, as_json, [("path", "PATH"), ("size", "SIZE"), ("etag", "ETAG")])


@cli.group()
def dataset() -> None:
    """Datasets: create (register a version), list, show, download."""


@dataset.command("create")
@click.argument("name")
@click.option(
    "--path",
    "paths",
    multiple=True,
    required=True,
    help="DATASTORE:PATTERN, wildcards allowed; repeatable",
)
@click.option("--tabular/--file", default=False, help="delimited files read as a table, or files")
@click.option("--separator", default=",")
@click.option("--no-header", is_flag=True)
@click.option("--snapshot", is_flag=True, help="copy the bytes into the artifact store")
@click.option("--new-version", is_flag=True, help="register a new version of an existing name")
@click.option("--description", default="")
@json_option
def dataset_create(
    name: str,
    paths: tuple[str, ...],
    tabular: bool,
    separator: str,
    no_header: bool,
    snapshot: bool,
    new_version: bool,
    description: str,
    as_json: bool,
) -> None:
    """Register a version of dataset NAME from datastore paths."""
    from cairn.sdk import Dataset

    ws = sync_workspace()
    pairs = []
    for item in paths:
        store, sep, pattern = item.partition(":")
        if not sep or not pattern:
            raise click.BadParameter(f"{item!r}: use DATASTORE:PATTERN", param_hint="--path")
        pairs.append((store, pattern))
    made = (
        Dataset.Tabular.from_delimited_files(pairs, separator=separator, header=not no_header)
        if tabular
        else Dataset.File.from_files(pairs)
    )
    made.workspace = ws
    version = made.register(
        ws, name, description=description, create_new_version=new_version, snapshot=snapshot
    )
    _show_dataset(name, version.version, as_json)


def _show_dataset(name: str, version: int | None, as_json: bool) -> None:
    """A version, its files, and the runs that read it."""

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        row = await ws.datasets.get(name, version)
        runs = await ws.datasets.runs(name, row["version"])
        return {**row, "read_by_runs": [r["run_id"] for r in runs]}

    row = run(with_workspace(go))
    row["files"] = [f"{f[0]}:{f[1]} ({f[2]} B)" for f in row["spec"].get("files", [])]
    row["spec"] = {k: v for k, v in row["spec"].items() if k != "files"}
    show(row, as_json)


@dataset.command("list")
@json_option
def dataset_list(as_json: bool) -> None:
    _assets("dataset", as_json)


@dataset.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@json_option
def dataset_show(name: str, version: int | None, as_json: bool) -> None:
    _show_dataset(name, version, as_json)


@dataset.command("download")
@click.argument("name")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", type=int, default=None)
@click.option("--overwrite", is_flag=True)
def dataset_download(name: str, target: Path, version: int | None, overwrite: bool) -> None:
    """The files of a dataset version into TARGET (checked against its fingerprint)."""
    from cairn.sdk import Dataset

    got = Dataset.get_by_name(sync_workspace(), name, version or "latest")
    files = got.download(target, overwrite=overwrite)
    click.echo(f"downloaded {len(files)} files to {target}")
