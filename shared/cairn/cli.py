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
