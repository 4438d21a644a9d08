"""The registry: models, environments, datastores, compute targets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from cairn.cli._base import cli, emit, json_option, run, show, sync_workspace, with_workspace
from cairn.proto.assets import AssetKind, ComputeSpec

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

_MODEL_COLUMNS = [
    ("name", "NAME"),
    ("version", "VERSION"),
    ("aliases", "ALIASES"),
    ("framework", "FRAMEWORK"),
    ("run_id", "RUN"),
    ("tags", "TAGS"),
]


@cli.group()
def model() -> None:
    """Registered models: register, list, show, download, alias."""


@model.command("register")
@click.argument("name")
@click.argument("path")
@click.option("--run", "run_id", default=None, help="PATH is a file (or folder) of this run")
@click.option("--description", default="")
@click.option("--framework", default=None)
@click.option("--framework-version", default=None)
@click.option("--tag", "tags", multiple=True, help="key=value, repeatable")
@json_option
def model_register(
    name: str,
    path: str,
    run_id: str | None,
    description: str,
    framework: str | None,
    framework_version: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register PATH (a local file or folder, or with --run a run file) as NAME's next version."""
    tag_map = dict(t.split("=", 1) for t in tags)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        staging, source = None, path
        if not run_id:  # a local file or folder: uploaded into a staging area first
            staging, source = await ws.models.upload(Path(path))
        return await ws.models.register(
            name,
            source,
            run_id=run_id,
            staging_id=staging,
            tags=tag_map,
            description=description,
            framework=framework,
            framework_version=framework_version,
        )

    emit(run(with_workspace(go)), as_json, _MODEL_COLUMNS)


@model.command("list")
@click.option("--name", default=None)
@click.option("--latest", is_flag=True, help="only the latest version of each name")
@json_option
def model_list(name: str | None, latest: bool, as_json: bool) -> None:
    rows = run(with_workspace(lambda ws: ws.models.list(name, latest=latest)))
    emit(rows, as_json, _MODEL_COLUMNS)


@model.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@click.option("--alias", default=None)
@json_option
def model_show(name: str, version: int | None, alias: str | None, as_json: bool) -> None:
    found = run(with_workspace(lambda ws: ws.models.get(name, version, alias=alias)))
    show(found, as_json, width=18)


@model.command("download")
@click.argument("name")
@click.option("--version", type=int, default=None)
@click.option("--alias", default=None)
@click.option("--output", "-o", default=".", show_default=True)
def model_download(name: str, version: int | None, alias: str | None, output: str) -> None:
    async def go(ws: AsyncWorkspace) -> Path:
        found = await ws.models.get(name, version, alias=alias)
        return await ws.models.download(found, Path(output))

    click.echo(str(run(with_workspace(go))))


@model.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
def model_alias(name: str, alias: str, version: int) -> None:
    """Point ALIAS of model NAME at VERSION."""
    run(with_workspace(lambda ws: ws.models.set_alias(name, alias, version)))
    click.echo(f"{name}@{alias} -> {version}")


# -- environments, datastores, compute ---------------------------------------------------------

_ASSET_COLUMNS = [
    ("name", "NAME"),
    ("version", "VERSION"),
    ("builtin", "BUILT-IN"),
    ("spec", "SPEC"),
]


def _assets(kind: AssetKind, as_json: bool) -> None:
    emit(run(with_workspace(lambda ws: ws.assets.list(kind))), as_json, _ASSET_COLUMNS)


def _asset(kind: AssetKind, name: str, version: int | None, as_json: bool) -> None:
    found = run(with_workspace(lambda ws: ws.assets.get(kind, name, version)))
    emit(found, as_json, _ASSET_COLUMNS)


@cli.group()
def environment() -> None:
    """Environments: create (from pip requirements or a conda file), list, show."""


@environment.command("create")
@click.argument("name")
@click.option("--pip-requirements", type=click.Path(exists=True), default=None)
@click.option("--conda-file", type=click.Path(exists=True), default=None)
@click.option("--image", default=None, help="Docker base image")
@json_option
def environment_create(
    name: str,
    pip_requirements: str | None,
    conda_file: str | None,
    image: str | None,
    as_json: bool,
) -> None:
    from cairn.sdk import Environment

    if conda_file:
        env = Environment.from_conda_specification(name, conda_file)
    elif pip_requirements:
        env = Environment.from_pip_requirements(name, pip_requirements)
    else:
        env = Environment(name)
    env.docker.base_image = image
    registered = env.register(sync_workspace())
    _asset("environment", name, registered.version, as_json)


@environment.command("list")
@json_option
def environment_list(as_json: bool) -> None:
    _assets("environment", as_json)


@environment.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@json_option
def environment_show(name: str, version: int | None, as_json: bool) -> None:
    _asset("environment", name, version, as_json)


@cli.group()
def datastore() -> None:
    """Datastores: create (a local directory or an S3 bucket), list."""


@datastore.command("create")
@click.argument("name")
@click.option("--path", default=None, help="a local directory")
@click.option("--bucket", default=None)
@click.option("--endpoint-url", default=None)
@click.option("--prefix", default="")
@click.option("--access-key-id", envvar="CAIRN_S3_ACCESS_KEY_ID", default=None)
@click.option("--secret-access-key", envvar="CAIRN_S3_SECRET_ACCESS_KEY", default=None)
@json_option
def datastore_create(
    name: str,
    path: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    prefix: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    as_json: bool,
) -> None:
    """Credentials come from options or CAIRN_S3_* variables and are sealed by the registry."""
    from cairn.sdk import Datastore

    ws = sync_workspace()
    if bool(path) == bool(bucket):
        raise click.BadParameter("give --path (local) or --bucket (S3)")
    if path:
        Datastore.register_local(ws, name, path)
    else:
        assert bucket is not None
        Datastore.register_s3(
            ws,
            name,
            bucket,
            endpoint_url=endpoint_url,
            prefix=prefix,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    _asset("datastore", name, None, as_json)


@datastore.command("list")
@json_option
def datastore_list(as_json: bool) -> None:
    _assets("datastore", as_json)


@cli.group()
def compute() -> None:
    """Compute targets: create, list, delete (create and delete need the operator role)."""


@compute.command("create")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["cluster", "instance", "attached", "local"]),
    default="cluster",
    show_default=True,
)
@click.option("--min-nodes", type=int, default=0, show_default=True)
@click.option("--max-nodes", type=int, default=1, show_default=True)
@click.option("--vm-size", default=None)
@click.option("--label", "labels", multiple=True, help="e.g. gpu; repeatable")
@json_option
def compute_create(
    name: str,
    kind: str,
    min_nodes: int,
    max_nodes: int,
    vm_size: str | None,
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    fields = {"kind": kind, "min_nodes": min_nodes, "max_nodes": max_nodes, "vm_size": vm_size}
    spec = msgspec.convert({**fields, "labels": list(labels)}, ComputeSpec)
    created = run(with_workspace(lambda ws: ws.assets.create_compute(name, spec)))
    emit(created, as_json, _ASSET_COLUMNS)


@compute.command("list")
@json_option
def compute_list(as_json: bool) -> None:
    _assets("compute", as_json)


@compute.command("delete")
@click.argument("name")
def compute_delete(name: str) -> None:
    run(with_workspace(lambda ws: ws.assets.delete_compute(name)))
    click.echo(f"deleted compute target {name}")
