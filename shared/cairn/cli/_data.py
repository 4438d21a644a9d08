"""Moving data: datastore upload, download and ls; datasets create, list, show, download."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import (
    as_of_option,
    cli,
    emit,
    json_option,
    run,
    show,
    sync_workspace,
    with_workspace,
)
from cairn.cli._registry import _assets, datastore

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace


@datastore.command("upload")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--target-path", "-t", default="", help="folder inside the datastore")
@click.option("--overwrite", is_flag=True, help="replace files that exist")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="show a progress bar of the bytes (default: when stderr is a terminal)",
)
def datastore_upload(
    name: str, source: Path, target_path: str, overwrite: bool, progress: bool | None
) -> None:
    """Upload files into a datastore.

    Uploads SOURCE, a file or a folder (recursively), into datastore NAME under --target-path.

    \b
    Example:
      cairn datastore upload lake ./images -t raw/images
    """
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
@click.option("--overwrite", is_flag=True, help="replace local files that exist")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="show a progress bar of the bytes (default: when stderr is a terminal)",
)
def datastore_download(
    name: str, target: Path, prefix: str, overwrite: bool, progress: bool | None
) -> None:
    """Download files from a datastore.

    Downloads the files of datastore NAME (those under --prefix) into the folder TARGET.

    \b
    Example:
      cairn datastore download lake ./local -p raw/images
    """
    from cairn.sdk import Datastore

    count = Datastore.get(sync_workspace(), name).download(target, prefix, overwrite, progress)
    click.echo(f"downloaded {count} files to {target}")


@datastore.command("ls")
@click.argument("name")
@click.argument("prefix", default="")
@json_option
def datastore_ls(name: str, prefix: str, as_json: bool) -> None:
    """List the files of a datastore.

    The files of datastore NAME under PREFIX (default: all): path, size, etag.

    \b
    Example:
      cairn datastore ls lake raw/
    """
    from cairn.sdk import Datastore

    files = Datastore.get(sync_workspace(), name).list_files(prefix)
    emit(files, as_json, [("path", "PATH"), ("size", "SIZE"), ("etag", "ETAG")])


@cli.group()
def dataset() -> None:
    """Datasets: create, list, versions, show, download.

    A dataset version names files of datastores (as files, or as a table of delimited
    files), with their fingerprint; jobs and runs that read it are recorded.

    \b
    Examples:
      cairn dataset create images --path lake:raw/images/*.png
      cairn dataset show images
    """


@dataset.command("create")
@click.argument("name")
@click.option(
    "--path",
    "paths",
    multiple=True,
    required=True,
    help="DATASTORE:PATTERN, wildcards allowed, or a URL (https://, s3://, or a scheme whose"
    " fsspec filesystem is installed); repeatable",
)
@click.option("--tabular/--file", default=False, help="delimited files read as a table, or files")
@click.option(
    "--separator", default=",", show_default=True, help="the column separator (with --tabular)"
)
@click.option("--no-header", is_flag=True, help="the files have no header line (with --tabular)")
@click.option("--snapshot", is_flag=True, help="copy the bytes into the artifact store")
@click.option("--new-version", is_flag=True, help="register a new version of an existing name")
@click.option("--description", default="", help="a line about this version")
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
    """Register a dataset version.

    Registers dataset NAME (or, with --new-version, its next version) from datastore paths,
    then shows it.

    \b
    Examples:
      cairn dataset create images --path lake:raw/images/*.png
      cairn dataset create sales --tabular --path lake:sales/2026-*.csv --new-version
      cairn dataset create iris --tabular --path https://example.com/data/iris.csv
    """
    from cairn.sdk import Dataset

    ws = sync_workspace()
    pairs: list[tuple[str, str] | str] = []
    for item in paths:
        if "://" in item:  # a URL, kept as given (checked by the SDK)
            pairs.append(item)
            continue
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


def _show_dataset(
    name: str, version: int | None, as_json: bool, as_of: datetime | int | None = None
) -> None:
    """A version, its files, and the runs that read it (as of a moment: the version then,
    without the runs, which the jobs' read model answers for now alone)."""

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        row = await ws.datasets.get(name, version, as_of=as_of)
        if as_of is not None:
            return row
        runs = await ws.datasets.runs(name, row["version"])
        return {**row, "read_by_runs": [r["run_id"] for r in runs]}

    row = run(with_workspace(go))
    spec = row["spec"]
    row["files"] = [f"{f[0]}:{f[1]} ({f[2]} B)" for f in spec.get("files", [])] + [
        f"{f[0]} ({f[2]} B)" for f in spec.get("url_files", [])
    ]
    row["spec"] = {k: v for k, v in spec.items() if k not in ("files", "url_files")}
    show(row, as_json)


@dataset.command("list")
@as_of_option
@json_option
def dataset_list(as_of: datetime | int | None, as_json: bool) -> None:
    """List datasets.

    The latest version of each dataset with its spec; with --as-of, the datasets the log
    held then, at their latest version then.

    \b
    Examples:
      cairn dataset list
      cairn dataset list --as-of 2026-11-29T14:05:00Z
    """
    _assets("dataset", as_json, as_of)


@dataset.command("versions")
@click.argument("name")
@as_of_option
@json_option
def dataset_versions(name: str, as_of: datetime | int | None, as_json: bool) -> None:
    """List the versions of one dataset.

    Every version of dataset NAME, oldest first; with --as-of, those the log held then.

    \b
    Examples:
      cairn dataset versions images
      cairn dataset versions images --as-of 1200
    """
    _assets("dataset", as_json, as_of, name=name)


@dataset.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@as_of_option
@json_option
def dataset_show(
    name: str, version: int | None, as_of: datetime | int | None, as_json: bool
) -> None:
    """Show one dataset version.

    A version of dataset NAME: its spec, its files and the runs that read it. With --as-of,
    the version as the log held it then (the latest then), without the runs that read it.

    \b
    Examples:
      cairn dataset show images --version 2
      cairn dataset show images --as-of 2026-11-29T14:05:00Z
    """
    _show_dataset(name, version, as_json, as_of)


@dataset.command("download")
@click.argument("name")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@click.option("--overwrite", is_flag=True, help="replace local files that exist")
def dataset_download(name: str, target: Path, version: int | None, overwrite: bool) -> None:
    """Download a dataset version.

    Downloads the files of a version of dataset NAME into the folder TARGET, checked against
    its fingerprint.

    \b
    Example:
      cairn dataset download images ./images --version 2
    """
    from cairn.sdk import Dataset

    got = Dataset.get_by_name(sync_workspace(), name, version or "latest")
    files = got.download(target, overwrite=overwrite)
    click.echo(f"downloaded {len(files)} files to {target}")
