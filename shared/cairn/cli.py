"""The ``cairn`` command line."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Coroutine
from typing import Any

import click

from cairn.errors import CairnError
from cairn.log import configure_logging
from cairn.settings import Settings, load_settings

__all__ = ["main"]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    return settings


@click.group()
def cli() -> None:
    """Cairn: experiments, runs and jobs, recorded as events in NATS JetStream."""


@cli.command()
@click.option("--home", envvar="CAIRN_HOME", default="~/.cairn", show_default=True)
@click.option("--port", default=4222, show_default=True, help="0 picks a free port")
@click.option("--demo", is_flag=True, help="run a demo experiment once the stack is up")
def up(home: str, port: int, demo: bool) -> None:
    """Start nats-server and every service in this process; Ctrl-C stops them."""
    from cairn.embedded._up import up as run_up

    _run(run_up(_settings(home=home), port=port, demo=demo))


@cli.command()
@click.argument("service")
@click.option("--nats-url", envvar="CAIRN_NATS_URL", default=None)
def serve(service: str, nats_url: str | None) -> None:
    """Run one service alone against a NATS server."""
    from cairn.embedded._up import all_services

    if service not in all_services():
        raise click.BadParameter(f"choose from {', '.join(all_services())}", param_hint="SERVICE")
    module = importlib.import_module(f"cairn.services.{service}")
    _run(module.main(_settings(nats_url=nats_url)))


def _version(conn: Any) -> str:
    v = conn.nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


async def _status(settings: Settings) -> dict[str, Any]:
    from cairn.bus import connect
    from cairn.proto.streams import STREAMS
    from cairn.rpc import ping_all

    conn = await connect(settings, name="cairn-status", connect_timeout=2)
    try:
        streams: dict[str, dict[str, Any]] = {}
        for definition in STREAMS:
            try:
                info = await conn.js.stream_info(definition["name"])
                streams[definition["name"]] = {
                    "messages": info.state.messages,
                    "bytes": info.state.bytes,
                    "last_seq": info.state.last_seq,
                }
            except Exception as exc:  # a missing stream is reported, not fatal
                streams[definition["name"]] = {"error": str(exc)}
        return {
            "server": {
                "url": conn.nc.connected_url.geturl() if conn.nc.connected_url else None,
                "version": _version(conn),
            },
            "streams": streams,
            "services": await ping_all(conn),
        }
    finally:
        await conn.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Show the server, the streams (message counts) and the running services."""
    report = _run(_status(_settings()))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    server = report["server"]
    click.echo(f"server    {server['url']}  nats-server {server['version']}")
    for name, s in report["streams"].items():
        detail = s.get("error") or f"{s['messages']:>8} msgs {s['bytes']:>12} bytes"
        click.echo(f"stream    {name:<8} {detail}")
    for svc in report["services"] or [{"service": "(none answering)", "instance": ""}]:
        click.echo(f"service   {svc['service']:<10} {svc['instance']}")


# -- tracking -----------------------------------------------------------------------------


def _emit(data: Any, as_json: bool, columns: list[tuple[str, str]]) -> None:
    """``--json`` prints the data; otherwise an aligned table of ``columns`` (key, header)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    click.echo("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)).rstrip())
    for row_cells in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row_cells, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:60]
    return str(value)


async def _with_workspace(fn: Any) -> Any:
    from cairn.sdk import connect

    async with connect(_settings()) as ws:
        return await fn(ws)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)


@cli.group()
def experiment() -> None:
    """Experiments of the workspace."""


@experiment.command("list")
@_json_option
def experiment_list(as_json: bool) -> None:
    rows = _run(_with_workspace(lambda ws: ws.experiments()))
    _emit(rows, as_json, [("name", "NAME"), ("runs", "RUNS"), ("created_at", "CREATED"),
                          ("created_by", "BY")])  # fmt: skip


@cli.group("run")
def run_group() -> None:
    """Runs: list, show, metrics, files, download."""


_RUN_COLUMNS = [("run_id", "RUN"), ("display_name", "NAME"), ("status", "STATUS"),
                ("start_time", "STARTED"), ("end_time", "ENDED")]  # fmt: skip


@run_group.command("list")
@click.option("--experiment", "-e", "experiment_name", default=None)
@click.option("--limit", default=100, show_default=True)
@_json_option
def run_list(experiment_name: str | None, limit: int, as_json: bool) -> None:
    from cairn.proto.commands import ListRuns

    q = ListRuns(experiment_name=experiment_name, limit=limit)
    rows = _run(_with_workspace(lambda ws: ws.client.ask(q))).data
    _emit(rows, as_json, [*_RUN_COLUMNS[:1], ("experiment_name", "EXPERIMENT"), *_RUN_COLUMNS[1:]])


@run_group.command("show")
@click.argument("run_id")
@_json_option
def run_show(run_id: str, as_json: bool) -> None:
    details = _run(_with_workspace(lambda ws: ws.run(run_id).details()))
    if as_json:
        _emit(details, True, [])
        return
    for key, value in details.items():
        click.echo(f"{key:<16} {_cell(value) if isinstance(value, (dict, list)) else value}")


@run_group.command("metrics")
@click.argument("run_id")
@click.option("--name", "-n", default=None)
@_json_option
def run_metrics(run_id: str, name: str | None, as_json: bool) -> None:
    metrics = _run(_with_workspace(lambda ws: ws.run(run_id).get_metrics(name)))
    if as_json:
        _emit(metrics, True, [])
        return
    rows = [{"name": k, "value": v} for k, v in sorted(metrics.items())]
    _emit(rows, False, [("name", "METRIC"), ("value", "VALUE")])


@run_group.command("files")
@click.argument("run_id")
@_json_option
def run_files(run_id: str, as_json: bool) -> None:
    files = _run(_with_workspace(lambda ws: ws.run(run_id).files()))
    _emit(files, as_json, [("path", "PATH"), ("size", "SIZE"), ("digest", "DIGEST")])


@run_group.command("download")
@click.argument("run_id")
@click.argument("path")
@click.option("--output", "-o", default=None, help="file or directory (default: ./<name>)")
@click.option("--progress/--no-progress", default=None)
def run_download(run_id: str, path: str, output: str | None, progress: bool | None) -> None:
    from pathlib import Path

    target = Path(output or Path(path).name)
    if target.is_dir():
        target = target / Path(path).name
    got = _run(_with_workspace(lambda ws: ws.run(run_id).download_file(path, target, progress)))
    click.echo(str(got))


# -- models ---------------------------------------------------------------------------------


def _sync_workspace() -> Any:
    from cairn.sdk import Workspace

    return Workspace(_settings())


_MODEL_COLUMNS = [("name", "NAME"), ("version", "VERSION"), ("aliases", "ALIASES"),
                  ("framework", "FRAMEWORK"), ("run_id", "RUN"), ("tags", "TAGS")]  # fmt: skip


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
@_json_option
def model_register(
    name: str, path: str, run_id: str | None, description: str, framework: str | None,
    framework_version: str | None, tags: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Register PATH (a local file or folder, or with --run a run file) as NAME's next version."""
    from cairn.sdk import Model

    ws = _sync_workspace()
    tag_map = dict(t.split("=", 1) for t in tags)
    if run_id:
        registered = Model._register(
            ws, name, path, run_id=run_id, tags=tag_map, description=description,
            framework=framework, framework_version=framework_version,
        )  # fmt: skip
    else:
        registered = Model.register(
            ws, path, name, tags=tag_map, description=description,
            model_framework=framework, model_framework_version=framework_version,
        )  # fmt: skip
    _emit(registered._data, as_json, _MODEL_COLUMNS)


@model.command("list")
@click.option("--name", default=None)
@click.option("--latest", is_flag=True, help="only the latest version of each name")
@_json_option
def model_list(name: str | None, latest: bool, as_json: bool) -> None:
    from cairn.sdk import Model

    rows = [m._data for m in Model.list(_sync_workspace(), name=name, latest=latest)]
    _emit(rows, as_json, _MODEL_COLUMNS)


@model.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@click.option("--alias", default=None)
@_json_option
def model_show(name: str, version: int | None, alias: str | None, as_json: bool) -> None:
    from cairn.sdk import Model

    data = Model(_sync_workspace(), name, version, alias=alias)._data
    if as_json:
        _emit(data, True, [])
        return
    for key, value in data.items():
        click.echo(f"{key:<18} {_cell(value) if isinstance(value, (dict, list)) else value}")


@model.command("download")
@click.argument("name")
@click.option("--version", type=int, default=None)
@click.option("--alias", default=None)
@click.option("--output", "-o", default=".", show_default=True)
def model_download(name: str, version: int | None, alias: str | None, output: str) -> None:
    from cairn.sdk import Model

    click.echo(Model(_sync_workspace(), name, version, alias=alias).download(output))


@model.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
def model_alias(name: str, alias: str, version: int) -> None:
    """Point ALIAS of model NAME at VERSION."""
    from cairn.sdk import Model

    Model(_sync_workspace(), name, version).set_alias(alias)
    click.echo(f"{name}@{alias} -> {version}")


# -- environments, datastores, compute ---------------------------------------------------------

_ASSET_COLUMNS = [("name", "NAME"), ("version", "VERSION"), ("builtin", "BUILT-IN"),
                  ("spec", "SPEC")]  # fmt: skip


def _assets(kind: str, as_json: bool) -> None:
    from cairn.proto.assets import ListAssets

    ws = _sync_workspace()
    rows = ws._run(ws.core.client.ask(ListAssets(asset_kind=kind))).data  # type: ignore[arg-type]
    _emit(rows, as_json, _ASSET_COLUMNS)


def _asset(kind: str, name: str, version: int | None, as_json: bool) -> None:
    from cairn.proto.assets import GetAsset

    ws = _sync_workspace()
    q = GetAsset(asset_kind=kind, name=name, version=version)  # type: ignore[arg-type]
    _emit(ws._run(ws.core.client.ask(q)).data, as_json, _ASSET_COLUMNS)


@cli.group()
def environment() -> None:
    """Environments: create (from pip requirements or a conda file), list, show."""


@environment.command("create")
@click.argument("name")
@click.option("--pip-requirements", type=click.Path(exists=True), default=None)
@click.option("--conda-file", type=click.Path(exists=True), default=None)
@click.option("--image", default=None, help="Docker base image")
@_json_option
def environment_create(
    name: str, pip_requirements: str | None, conda_file: str | None, image: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    from cairn.sdk import Environment

    if conda_file:
        env = Environment.from_conda_specification(name, conda_file)
    elif pip_requirements:
        env = Environment.from_pip_requirements(name, pip_requirements)
    else:
        env = Environment(name)
    env.docker.base_image = image
    registered = env.register(_sync_workspace())
    _asset("environment", name, registered.version, as_json)


@environment.command("list")
@_json_option
def environment_list(as_json: bool) -> None:
    _assets("environment", as_json)


@environment.command("show")
@click.argument("name")
@click.option("--version", type=int, default=None)
@_json_option
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
@_json_option
def datastore_create(
    name: str, path: str | None, bucket: str | None, endpoint_url: str | None, prefix: str,
    access_key_id: str | None, secret_access_key: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Credentials come from options or CAIRN_S3_* variables and are sealed by the registry."""
    from cairn.sdk import Datastore

    ws = _sync_workspace()
    if bool(path) == bool(bucket):
        raise click.BadParameter("give --path (local) or --bucket (S3)")
    if path:
        Datastore.register_local(ws, name, path)
    else:
        assert bucket is not None
        Datastore.register_s3(
            ws, name, bucket, endpoint_url=endpoint_url, prefix=prefix,
            access_key_id=access_key_id, secret_access_key=secret_access_key,
        )  # fmt: skip
    _asset("datastore", name, None, as_json)


@datastore.command("list")
@_json_option
def datastore_list(as_json: bool) -> None:
    _assets("datastore", as_json)


@cli.group()
def compute() -> None:
    """Compute targets: create, list, delete (create and delete need the operator role)."""


@compute.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["cluster", "instance", "attached", "local"]),
              default="cluster", show_default=True)  # fmt: skip
@click.option("--min-nodes", type=int, default=0, show_default=True)
@click.option("--max-nodes", type=int, default=1, show_default=True)
@click.option("--vm-size", default=None)
@click.option("--label", "labels", multiple=True, help="e.g. gpu; repeatable")
@_json_option
def compute_create(
    name: str, kind: str, min_nodes: int, max_nodes: int, vm_size: str | None,
    labels: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    from cairn.sdk import ComputeTarget

    ComputeTarget.create(_sync_workspace(), name, kind, min_nodes, max_nodes, vm_size, list(labels))
    _asset("compute", name, None, as_json)


@compute.command("list")
@_json_option
def compute_list(as_json: bool) -> None:
    _assets("compute", as_json)


@compute.command("delete")
@click.argument("name")
def compute_delete(name: str) -> None:
    from cairn.sdk import ComputeTarget

    ComputeTarget(_sync_workspace(), name).delete()
    click.echo(f"deleted compute target {name}")


@cli.command()
def sync() -> None:
    """Send what training scripts spooled while the bus was unreachable."""
    from cairn.bus import connect
    from cairn.rpc import Client
    from cairn.sdk._outbox import replay_spool_dir

    settings = _settings()

    async def go() -> tuple[int, int]:
        conn = await connect(settings, name="cairn-sync")
        try:
            return await replay_spool_dir(
                settings.home_path / "spool", lambda entry: Client(conn, entry.workspace)
            )
        finally:
            await conn.close()

    files, commands = _run(go())
    click.echo(f"synced {commands} spooled commands from {files} files")


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CairnError as exc:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(1)
