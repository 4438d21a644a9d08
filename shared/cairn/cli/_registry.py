"""The registry: models, environments, datastores, compute targets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from cairn.cli._base import (
    as_of_option,
    cli,
    done,
    emit,
    json_option,
    run,
    show,
    sync_workspace,
    with_workspace,
)
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
    """Registered models: register, list, show, download, alias.

    Each registration of a name adds a version; an alias (e.g. production) points at one.

    \b
    Examples:
      cairn model register mnist outputs/model.pkl --run RUN_ID
      cairn model list --latest
    """


@model.command("register")
@click.argument("name")
@click.argument("path")
@click.option("--run", "run_id", default=None, help="PATH is a file (or folder) of this run")
@click.option("--description", default="", help="a line about this version")
@click.option("--framework", default=None, help="e.g. PyTorch, ScikitLearn")
@click.option("--framework-version", default=None, help="e.g. 2.3")
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
    """Register a model version.

    Registers PATH (a local file or folder, uploaded; or with --run a file or folder of that
    run) as the next version of model NAME.

    \b
    Examples:
      cairn model register mnist ./model.pkl --framework ScikitLearn --tag stage=dev
      cairn model register mnist outputs/model.pkl --run RUN_ID
    """
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
@click.option("--name", default=None, help="only the versions of this model")
@click.option("--latest", is_flag=True, help="only the latest version of each name")
@as_of_option
@json_option
def model_list(name: str | None, latest: bool, as_of: datetime | int | None, as_json: bool) -> None:
    """List model versions.

    One line per version: name, version, aliases, framework, run, tags; with --as-of, the
    versions the log held then, with their aliases then.

    \b
    Examples:
      cairn model list --latest
      cairn model list --name mnist --as-of 2026-11-29T14:05:00Z
    """
    rows = run(with_workspace(lambda ws: ws.models.list(name, latest=latest, as_of=as_of)))
    emit(rows, as_json, _MODEL_COLUMNS)


@model.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@click.option("--alias", default=None, help="the version this alias points at")
@as_of_option
@json_option
def model_show(
    name: str,
    version: int | None,
    alias: str | None,
    as_of: datetime | int | None,
    as_json: bool,
) -> None:
    """Show one model version.

    A version of model NAME (the latest, --version or --alias): its files, run, framework,
    tags and aliases; with --as-of, as the log held them then (the latest then, the version
    the alias then named).

    \b
    Examples:
      cairn model show mnist --alias production
      cairn model show mnist --alias production --as-of 1200
    """
    get = with_workspace(lambda ws: ws.models.get(name, version, alias=alias, as_of=as_of))
    found = run(get)
    show(found, as_json, width=18)


@model.command("download")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@click.option("--alias", default=None, help="the version this alias points at")
@click.option("--output", "-o", default=".", show_default=True, help="the folder to write into")
def model_download(name: str, version: int | None, alias: str | None, output: str) -> None:
    """Download a model version.

    Writes the files of a version of model NAME (the latest, --version or --alias) under
    --output and prints where they went.

    \b
    Example:
      cairn model download mnist --alias production -o models/
    """

    async def go(ws: AsyncWorkspace) -> Path:
        found = await ws.models.get(name, version, alias=alias)
        return await ws.models.download(found, Path(output))

    click.echo(str(run(with_workspace(go))))


@model.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@json_option
def model_alias(name: str, alias: str, version: int, as_json: bool) -> None:
    """Point an alias at a model version.

    Points ALIAS (e.g. production) of model NAME at VERSION, moving it if it pointed elsewhere.

    \b
    Example:
      cairn model alias mnist production 3
    """
    run(with_workspace(lambda ws: ws.models.set_alias(name, alias, version)))
    data = {"model": name, "alias": alias, "version": version}
    done(as_json, data, f"{name}@{alias} -> {version}")


# -- environments, datastores, compute ---------------------------------------------------------

_ASSET_COLUMNS = [
    ("name", "NAME"),
    ("version", "VERSION"),
    ("builtin", "BUILT-IN"),
    ("spec", "SPEC"),
]


def _assets(
    kind: AssetKind,
    as_json: bool,
    as_of: datetime | int | None = None,
    name: str | None = None,
) -> None:
    """The latest version of each asset of ``kind`` (``name``: every version of that one)."""
    listing = with_workspace(lambda ws: ws.assets.list(kind, name=name, as_of=as_of))
    emit(run(listing), as_json, _ASSET_COLUMNS)


def _asset(
    kind: AssetKind,
    name: str,
    version: int | None,
    as_json: bool,
    as_of: datetime | int | None = None,
) -> None:
    found = run(with_workspace(lambda ws: ws.assets.get(kind, name, version, as_of=as_of)))
    emit(found, as_json, _ASSET_COLUMNS)


@cli.group()
def environment() -> None:
    """Environments: create, list, show.

    An environment is the Python packages (pip requirements or a conda file) and the Docker
    base image a job runs with; each registration of a name adds a version.

    \b
    Example:
      cairn environment create torch --pip-requirements requirements.txt
    """


@environment.command("create")
@click.argument("name")
@click.option(
    "--pip-requirements", type=click.Path(exists=True), default=None, help="a requirements.txt"
)
@click.option(
    "--conda-file",
    type=click.Path(exists=True),
    default=None,
    help="a conda environment.yml (instead of --pip-requirements)",
)
@click.option("--image", default=None, help="Docker base image")
@json_option
def environment_create(
    name: str,
    pip_requirements: str | None,
    conda_file: str | None,
    image: str | None,
    as_json: bool,
) -> None:
    """Register an environment version.

    Registers the next version of environment NAME from a conda file or pip requirements
    (neither: no extra packages), on an optional Docker base image.

    \b
    Example:
      cairn environment create torch --pip-requirements requirements.txt
    """
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
@as_of_option
@json_option
def environment_list(as_of: datetime | int | None, as_json: bool) -> None:
    """List environments.

    The latest version of each environment, built-in ones included; with --as-of, as the
    log held them then.

    \b
    Examples:
      cairn environment list
      cairn environment list --as-of 2026-11-29T14:05:00Z
    """
    _assets("environment", as_json, as_of)


@environment.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None, help="this version (default: the latest)")
@as_of_option
@json_option
def environment_show(
    name: str, version: int | None, as_of: datetime | int | None, as_json: bool
) -> None:
    """Show one environment version.

    A version of environment NAME with its spec (packages, base image); with --as-of, as the
    log held it then (the latest version then).

    \b
    Examples:
      cairn environment show torch --json
      cairn environment show torch --as-of 1200
    """
    _asset("environment", name, version, as_json, as_of)


@cli.group()
def datastore() -> None:
    """Datastores: create, list, show, upload, download, ls.

    A datastore is a local directory or an S3 bucket that datasets and jobs read from.

    \b
    Examples:
      cairn datastore create lake --bucket data --endpoint-url http://localhost:8333
      cairn datastore upload lake ./images -t raw/images
    """


@datastore.command("create")
@click.argument("name")
@click.option("--path", default=None, help="a local directory (a local datastore)")
@click.option("--bucket", default=None, help="an S3 bucket (an S3 datastore)")
@click.option(
    "--endpoint-url",
    default=None,
    help="the S3 endpoint, e.g. http://localhost:8333 (default: AWS)",
)
@click.option("--prefix", default="", help="a folder inside the bucket")
@click.option(
    "--access-key-id",
    envvar="CAIRN_S3_ACCESS_KEY_ID",
    show_envvar=True,
    default=None,
    help="the S3 access key id",
)
@click.option(
    "--secret-access-key",
    envvar="CAIRN_S3_SECRET_ACCESS_KEY",
    show_envvar=True,
    default=None,
    help="the S3 secret access key",
)
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
    """Register a datastore.

    Registers datastore NAME: a local directory (--path) or an S3 bucket (--bucket). S3
    credentials come from the options or the CAIRN_S3_* variables and are sealed by the
    registry.

    \b
    Examples:
      cairn datastore create scratch --path /data/scratch
      cairn datastore create lake --bucket data --endpoint-url http://localhost:8333
    """
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
@as_of_option
@json_option
def datastore_list(as_of: datetime | int | None, as_json: bool) -> None:
    """List datastores.

    Every datastore of the workspace, the built-in ones included; with --as-of, as the log
    held them then.

    \b
    Examples:
      cairn datastore list
      cairn datastore list --as-of 2026-11-29T14:05:00Z
    """
    _assets("datastore", as_json, as_of)


@datastore.command("show")
@click.argument("name")
@as_of_option
@json_option
def datastore_show(name: str, as_of: datetime | int | None, as_json: bool) -> None:
    """Show one datastore.

    Datastore NAME's kind and place (never its credentials); with --as-of, as the log held
    it then.

    \b
    Examples:
      cairn datastore show lake
      cairn datastore show lake --as-of 1200
    """
    _asset("datastore", name, None, as_json, as_of)


@cli.group()
def compute() -> None:
    """Compute targets: create, list, show, delete.

    A compute target names where jobs run; agents started with 'cairn agent --compute NAME'
    serve it. Creating and deleting one needs the compute-operator role.

    \b
    Example:
      cairn compute create gpu --max-nodes 4 --label gpu
    """


@compute.command("create")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["cluster", "instance", "attached", "local"]),
    default="cluster",
    show_default=True,
    help="what kind of target",
)
@click.option("--min-nodes", type=int, default=0, show_default=True, help="nodes kept running")
@click.option("--max-nodes", type=int, default=1, show_default=True, help="nodes at most")
@click.option("--vm-size", default=None, help="the machine size of a node, e.g. STANDARD_NC6")
@click.option(
    "--label", "labels", multiple=True, help="a label of the target, e.g. gpu; repeatable"
)
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
    """Create a compute target (operator role).

    Creates compute target NAME; needs the compute-operator role.

    \b
    Example:
      cairn compute create gpu --max-nodes 4 --label gpu
    """
    fields = {"kind": kind, "min_nodes": min_nodes, "max_nodes": max_nodes, "vm_size": vm_size}
    spec = msgspec.convert({**fields, "labels": list(labels)}, ComputeSpec)
    created = run(with_workspace(lambda ws: ws.assets.create_compute(name, spec)))
    emit(created, as_json, _ASSET_COLUMNS)


@compute.command("list")
@as_of_option
@json_option
def compute_list(as_of: datetime | int | None, as_json: bool) -> None:
    """List compute targets.

    Every compute target of the workspace with its spec; with --as-of, those the log held
    then, as they were then.

    \b
    Examples:
      cairn compute list
      cairn compute list --as-of 2026-11-29T14:05:00Z
    """
    _assets("compute", as_json, as_of)


@compute.command("show")
@click.argument("name")
@as_of_option
@json_option
def compute_show(name: str, as_of: datetime | int | None, as_json: bool) -> None:
    """Show one compute target.

    Compute target NAME with its spec; with --as-of, as the log held it then (one that did
    not exist then is not found).

    \b
    Examples:
      cairn compute show gpu
      cairn compute show gpu --as-of 1200
    """
    _asset("compute", name, None, as_json, as_of)


@compute.command("delete")
@click.argument("name")
@json_option
def compute_delete(name: str, as_json: bool) -> None:
    """Delete a compute target (operator role).

    Deletes compute target NAME; needs the compute-operator role.

    \b
    Example:
      cairn compute delete gpu
    """
    run(with_workspace(lambda ws: ws.assets.delete_compute(name)))
    done(as_json, {"compute": name, "deleted": True}, f"deleted compute target {name}")
