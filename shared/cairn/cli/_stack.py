"""The stack: up, serve, status, sync."""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from cairn.cli._base import cli, done, json_option, run, settings
from cairn.settings import Settings

if TYPE_CHECKING:
    from cairn.embedded._server import NatsServer
    from cairn.service import OpsAddress

F = TypeVar("F", bound=Callable[..., Any])


def ops_options(fn: F) -> F:
    """``--ops-port`` and ``--ops-host``: where a service process serves /metrics, /healthz
    and /readyz (docs/operations.md)."""
    fn = click.option(
        "--ops-host",
        default=None,
        help="address of the ops routes (default 127.0.0.1; they carry no authentication:"
        " keep them behind the network boundary)",
    )(fn)
    return click.option(
        "--ops-port",
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        help="serve GET /metrics, /healthz and /readyz on this port (0: not at all)",
    )(fn)


def ops_address(port: int, host: str | None) -> OpsAddress | None:
    from cairn.service import OpsAddress

    if not port:
        if host is not None:
            raise click.BadParameter(
                "give --ops-port too (0 serves nothing)", param_hint="--ops-host"
            )
        return None
    return OpsAddress(host or "127.0.0.1", port)


@cli.command()
@click.option(
    "--home",
    envvar="CAIRN_HOME",
    default="~/.cairn",
    show_default=True,
    help="folder of the stack: server store, credentials, config.json, read models",
)
@click.option("--port", default=4222, show_default=True, help="0 picks a free port")
@click.option("--demo", is_flag=True, help="run a demo experiment once the stack is up")
@click.option(
    "--local-slots",
    type=int,
    default=None,
    help="job slots of the local agent (default: one per CPU; 0: no local agent)",
)
@click.option(
    "--server-restarts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="restarts of a nats-server that dies before cairn up gives up (exit 1)",
)
@click.option(
    "--tls",
    is_flag=True,
    help="the server requires TLS: certificates under HOME/tls (made once, then reused);"
    " config.json names the CA, so every command works unchanged",
)
@click.option(
    "--tls-verify",
    is_flag=True,
    help="require a client certificate too (mutual TLS; implies --tls); one is made for this"
    " stack's processes and named in config.json",
)
@click.option(
    "--gateway-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="where the studio listens on 127.0.0.1 (default: the settings' gateway_port, 8742;"
    " 0: no studio)",
)
def up(
    home: str,
    port: int,
    demo: bool,
    local_slots: int | None,
    server_restarts: int,
    tls: bool,
    tls_verify: bool,
    gateway_port: int | None,
) -> None:
    """Start nats-server, every service and the local agent in this process; Ctrl-C stops
    them. A server that dies is restarted; one that a killed cairn up left behind is stopped
    first. What scripts spooled while the stack was down is sent at start. Without --tls the
    server speaks plain NATS on 127.0.0.1 (loopback only; docs/security.md says why).

    Example: cairn up --demo"""
    from cairn.embedded._up import up as run_up

    run(
        run_up(
            settings(home=home),
            port=port,
            demo=demo,
            local_slots=local_slots,
            server_restarts=server_restarts,
            tls=tls or tls_verify,
            tls_verify=tls_verify,
            gateway_port=gateway_port,
        )
    )


@cli.command()
@click.argument("service")
@click.option(
    "--nats-url",
    envvar="CAIRN_NATS_URL",
    default=None,
    help="the NATS server (default: CAIRN_NATS_URL, else the settings' nats_url)",
)
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='a JSON file with the service user\'s "user" and "password" (default: the'
    " service user of the credentials.json that cairn up wrote in the home, else"
    " CAIRN_NATS_USER and CAIRN_NATS_PASSWORD)",
)
@ops_options
def serve(
    service: str, nats_url: str | None, creds: Path | None, ops_port: int, ops_host: str | None
) -> None:
    """Run one service alone against a NATS server, as the service user.

    SERVICE is one of: tracking, ingester, artifacts, registry, scheduler, pipelines,
    sweeps, schedules, webhooks, audit, gateway. It
    connects with the service user's credentials (never a person's: those are refused), and
    serves until SIGINT or SIGTERM, which also stop it while it is still connecting. With
    --ops-port it also answers GET /metrics (Prometheus), /healthz and /readyz over HTTP.
    The gateway (the studio and the HTTP API, at the settings' gateway_host:gateway_port)
    holds no credentials: it acts as each signed-in user with theirs, so --creds means
    nothing to it and is refused; it serves /metrics, /healthz and /readyz on its own port.

    \b
    Example:
      cairn serve tracking --nats-url nats://127.0.0.1:4222
      cairn serve ingester --creds service.json --ops-port 9464
      CAIRN_GATEWAY_PORT=8080 cairn serve gateway
    """
    from cairn.embedded._up import all_services

    names = [*all_services(), "gateway"]
    if service not in names:
        raise click.BadParameter(f"choose from {', '.join(names)}", param_hint="SERVICE")
    ops = ops_address(ops_port, ops_host)
    loaded = settings(nats_url=nats_url)
    if service == "gateway":
        if creds is not None:
            raise click.BadParameter(
                "the gateway acts with each signed-in user's credentials, never its own",
                param_hint="--creds",
            )
        if ops is not None:
            raise click.BadParameter(
                "the gateway serves /metrics, /healthz and /readyz on its own port",
                param_hint="--ops-port",
            )
        from cairn.services.gateway import main as gateway_main

        anonymous = msgspec.structs.replace(
            loaded, nats_user=None, nats_password=None, nats_creds=None
        )
        run(gateway_main(anonymous))
        return
    module = importlib.import_module(f"cairn.services.{service}")
    run(module.main(service_connection_settings(creds, loaded), ops=ops))


def service_connection_settings(creds: Path | None, loaded: Settings | None = None) -> Settings:
    """The settings to connect as the service user: from ``creds`` (a JSON file with "user"
    and "password"), else the home's credentials.json, else the environment's."""
    from cairn.embedded._auth import embedded_service_settings

    loaded = settings() if loaded is None else loaded
    if creds is None:
        return embedded_service_settings(loaded)
    user, password = _read_creds(creds)
    return msgspec.structs.replace(loaded, nats_user=user, nats_password=password)


@cli.command()
@json_option
def studio(as_json: bool) -> None:
    """Where the studio of this home's stack is, and how to sign in to it.

    It shows the local person's user name and password (from the home's credentials.json,
    which only you can read): the studio asks for them once per browser. Others sign in with
    the password 'cairn user add' gave them.
    """
    from cairn.embedded._server import NatsServer

    loaded = settings()
    if not (loaded.home_path / "credentials.json").is_file():
        raise click.ClickException(
            f"{loaded.home_path} holds no stack: run 'cairn up' first (or set CAIRN_HOME)"
        )
    creds = NatsServer(loaded.home_path, port=0).credentials
    assert creds is not None
    host = loaded.gateway_host if ":" not in loaded.gateway_host else f"[{loaded.gateway_host}]"
    answer = {
        "url": f"http://{host}:{loaded.gateway_port}/",
        "user": creds.client_user,
        "password": creds.client_password,
    }
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"studio    {answer['url']}")
    click.echo(f"user      {answer['user']}")
    click.echo(f"password  {answer['password']}")


def _read_creds(path: Path) -> tuple[str, str]:
    try:
        raw = json.loads(path.read_text())
        user, password = raw["user"], raw["password"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(
            f'{path} must be a JSON object with "user" and "password"', param_hint="--creds"
        ) from exc
    if not isinstance(user, str) or not isinstance(password, str):
        raise click.BadParameter(f"{path}: user and password must be text", param_hint="--creds")
    return user, password


def _version(conn: Any) -> str:
    v = conn.nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


async def _status(settings: Settings) -> dict[str, Any]:
    import asyncio

    from nats.errors import Error as NatsError

    from cairn.bus import connect
    from cairn.projection import read_model_states
    from cairn.proto.streams import STREAMS
    from cairn.rpc import ping_all

    conn = await connect(settings, name="cairn-status")
    try:
        streams: dict[str, dict[str, Any]] = {}
        for definition in STREAMS:
            try:
                info = await conn.js.stream_info(definition.name)
                streams[definition.name] = {
                    "messages": info.state.messages,
                    "bytes": info.state.bytes,
                    "last_seq": info.state.last_seq,
                }
            except NatsError as exc:  # a missing stream (or no answer) is reported, not fatal
                streams[definition.name] = {"error": str(exc)}
        services, read_models = await asyncio.gather(ping_all(conn), read_model_states(conn))
        return {
            "server": {
                "url": conn.nc.connected_url.geturl() if conn.nc.connected_url else None,
                "version": _version(conn),
            },
            "streams": streams,
            "services": services,
            "read_models": read_models,
        }
    finally:
        await conn.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def status(as_json: bool) -> None:
    """Show the server, the streams (message counts), the running services and their read
    models (position, quarantined events: see 'cairn projection retry')."""
    report = run(_status(settings()))
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
    for model in report["read_models"]:
        if "error" in model:
            click.echo(f"read model {'?':<10} {model['instance']}  error: {model['error']}")
            continue
        click.echo(
            f"read model {model['read_model']:<10} seq {model['last_seq']:>8}"
            f"  quarantined {model['quarantined']:>4}  {model['instance']}"
        )


@cli.command()
@json_option
def sync(as_json: bool) -> None:
    """Send now what training scripts spooled while the bus was unreachable (cairn up and
    agents also send it on their own, at start and every 30 s). Commands the bus refuses for
    good are kept with the reason in the spool's refused folder, and the exit code is 1."""
    import sys

    from cairn.bus import connect
    from cairn.rpc import Client
    from cairn.sdk import replay_spool_dir
    from cairn.spool import SpoolReport

    loaded = settings()

    async def go() -> SpoolReport:
        conn = await connect(loaded, name="cairn-sync")
        try:
            return await replay_spool_dir(
                loaded.home_path / "spool", lambda entry: Client(conn, entry.workspace)
            )
        finally:
            await conn.close()

    report = run(go())
    lines = [f"synced {report.sent} spooled commands from {report.files} files"]
    if report.refused:
        lines.append(
            f"refused {len(report.refused)} spooled commands for good, kept with the reason in "
            f"{report.refused_dir}:"
        )
        lines += [f"  {n} x [{code}] {message}" for (code, message), n in report.reasons().items()]
    reasons = [
        {"code": code, "message": message, "count": n}
        for (code, message), n in sorted(report.reasons().items())
    ]
    data = {
        "sent": report.sent,
        "files": report.files,
        "refused": len(report.refused),
        "refused_dir": str(report.refused_dir) if report.refused else None,
        "reasons": reasons,
    }
    done(as_json, data, *lines)
    if report.refused:
        sys.exit(1)


@cli.group(invoke_without_command=True)
@click.option("--compute", default=None, help="the compute target this agent serves")
@click.option("--slots", type=int, default=1, show_default=True, help="jobs run at once")
@click.option("--label", "labels", multiple=True, help="e.g. gpu; repeatable")
@click.option(
    "--drain",
    is_flag=True,
    help="on SIGTERM finish running jobs (take no new ones) instead of handing them back",
)
@click.option(
    "--backend",
    type=click.Choice(["process", "docker"]),
    default="process",
    show_default=True,
    help="run jobs as local processes or in Docker containers",
)
@click.option(
    "--nats-url",
    envvar="CAIRN_NATS_URL",
    default=None,
    help="the NATS server (default: CAIRN_NATS_URL, else the settings' nats_url)",
)
@ops_options
@click.pass_context
def agent(
    ctx: click.Context,
    compute: str | None,
    slots: int,
    labels: tuple[str, ...],
    drain: bool,
    backend: str,
    nats_url: str | None,
    ops_port: int,
    ops_host: str | None,
) -> None:
    """Run a compute agent, or list the agents.

    With --compute NAME, runs the jobs sent to compute target NAME until SIGINT or SIGTERM;
    'cairn agent list' lists the agents with a live heartbeat.

    \b
    Examples:
      cairn agent --compute gpu --slots 2 --label gpu --ops-port 9465
      cairn agent list
    """
    if ctx.invoked_subcommand is not None:
        return
    if compute is None:
        raise click.UsageError("give --compute NAME (or a subcommand: list)")
    ops = ops_address(ops_port, ops_host)
    from cairn.services.agent import main as agent_main

    loaded = settings(nats_url=nats_url)
    run(agent_main(loaded, compute, slots, list(labels), drain, backend, ops=ops))


_AGENT_COLUMNS = [
    ("agent_id", "AGENT"),
    ("compute", "COMPUTE"),
    ("cpus", "CPUS"),
    ("gpu_count", "GPUS"),
    ("free_slots", "FREE"),
    ("slots", "SLOTS"),
    ("labels", "LABELS"),
    ("pythons", "PYTHONS"),
    ("heartbeat_age_s", "BEAT AGO (s)"),
]


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON (complete, never cut)")
def agent_list(as_json: bool) -> None:
    """Agents with a live heartbeat: compute, capacity, slots, the Pythons a job may pin,
    last heartbeat."""
    import time

    import msgspec

    from cairn.bus import connect
    from cairn.cli._base import emit
    from cairn.services.agent import list_agents

    async def go() -> list[dict[str, Any]]:
        conn = await connect(settings(), name="cairn-agent-list")
        try:
            return [msgspec.to_builtins(a) for a in await list_agents(conn)]
        finally:
            await conn.close()

    rows = run(go())
    for row in rows:
        row["gpu_count"] = len(row["gpus"])
        row["heartbeat_age_s"] = round(time.time() - row["heartbeat_at"], 1)
    emit(rows, as_json, _AGENT_COLUMNS)


@contextlib.asynccontextmanager
async def home_server_alone(
    home: Path, say: Callable[[str], None], what: str
) -> AsyncIterator[NatsServer | None]:
    """This home's nats-server started alone (no services) for one command and stopped after
    it, when none runs over the home; ``None`` when one does (the command uses that one)."""
    from cairn.embedded._server import NatsServer

    server = NatsServer(home, port=0)
    if server.running_pid() is not None:
        yield None
        return
    await server.start()
    say(f"started this home's server alone for the {what}: {server.url}")
    try:
        yield server
    finally:
        server.stop()
