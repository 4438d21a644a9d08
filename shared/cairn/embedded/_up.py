"""``cairn up``: the whole stack in one process over ``$CAIRN_HOME``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import connect as bus_connect
from cairn.embedded._admin import admin_settings, adopt_memberless
from cairn.embedded._auth import LOCAL_ROLES, embedded_agent_settings
from cairn.embedded._server import SERVICE_USER, NatsServer, write_private
from cairn.errors import CairnError, PermissionDenied, Unavailable
from cairn.log import get_logger
from cairn.projection import Projection
from cairn.sdk import AsyncWorkspace, connect
from cairn.service import ServiceFactory, install_stop_signals, run_services
from cairn.settings import Settings
from cairn.spool import send_spools_periodically
from cairn.tls import ensure_certs

__all__ = ["all_services", "read_models", "run_demo", "up"]

log = get_logger("cairn.up")


def all_services() -> dict[str, ServiceFactory]:
    from cairn.services.artifacts import ArtifactsService
    from cairn.services.audit import AuditService
    from cairn.services.ingester import IngesterService
    from cairn.services.pipelines import PipelinesService
    from cairn.services.registry import RegistryService
    from cairn.services.scheduler import SchedulerService
    from cairn.services.schedules import SchedulesService
    from cairn.services.sweeps import SweepsService
    from cairn.services.tracking import TrackingService
    from cairn.services.webhooks import WebhookService

    return {
        "tracking": TrackingService,
        "ingester": IngesterService,
        "artifacts": ArtifactsService,
        "registry": RegistryService,
        "scheduler": SchedulerService,
        "schedules": SchedulesService,
        "pipelines": PipelinesService,
        "webhooks": WebhookService,
        "sweeps": SweepsService,
        "audit": AuditService,
    }


def read_models() -> dict[str, Callable[[], Projection[Any]]]:
    """Every read model the services keep, by name: what ``cairn replay`` rebuilds."""
    from cairn.services.ingester._projection import MetricsProjection
    from cairn.services.pipelines._projection import PipelinesProjection
    from cairn.services.registry._projection import RegistryProjection
    from cairn.services.scheduler._projection import JobsProjection
    from cairn.services.schedules._projection import SchedulesProjection
    from cairn.services.sweeps._projection import ReportsProjection, SweepsProjection
    from cairn.services.tracking._metrics import RunMetricsProjection
    from cairn.services.tracking._projection import TrackingProjection

    made: list[Callable[[], Projection[Any]]] = [
        TrackingProjection,
        RunMetricsProjection,
        MetricsProjection,
        RegistryProjection,
        JobsProjection,
        SchedulesProjection,
        PipelinesProjection,
        SweepsProjection,
        ReportsProjection,
    ]
    return {kind().name: kind for kind in made}


#: the client certificate ``cairn up --tls-verify`` makes for its own processes and the
#: local person (the server then refuses any client without one signed by its CA)
LOCAL_CLIENT = "cairn-local"


def client_settings(server: NatsServer, base: Settings) -> Settings:
    """The local person's settings for ``server``; with TLS, the CA to verify it against
    (and the local client certificate when it requires one); without, no TLS setting at all,
    whatever the environment says (the stack's processes speak to its own server)."""
    assert server.credentials is not None
    tls = server.tls
    mutual = tls is not None and server.tls_verify
    return msgspec.structs.replace(
        base,
        home=str(server.home),
        nats_url=server.url,
        nats_user=server.credentials.client_user,
        nats_password=server.credentials.client_password,
        tls_ca=str(tls.ca) if tls is not None else None,
        tls_cert=str(tls.client_cert(LOCAL_CLIENT)) if mutual and tls is not None else None,
        tls_key=str(tls.client_key(LOCAL_CLIENT)) if mutual and tls is not None else None,
    )


def write_client_config(path: Path, settings: Settings) -> None:
    """The file ``load_settings`` / ``Workspace.from_config()`` read: URL, user, workspace,
    and the TLS files when the server requires TLS (so every command works unchanged)."""
    keys = ("nats_url", "nats_user", "nats_password", "workspace")
    body = {k: getattr(settings, k) for k in keys}
    body.update(
        {
            k: getattr(settings, k)
            for k in ("tls_ca", "tls_cert", "tls_key")
            if getattr(settings, k) is not None
        }
    )
    write_private(path, json.dumps(body, indent=2) + "\n")


async def run_demo(ws: AsyncWorkspace, say: Callable[[str], None] = print) -> None:
    """A small experiment: three runs that log a loss curve and a file, one of which fails,
    then what the read models say about them."""
    exp = await ws.experiment("demo")
    for i, lr in enumerate((0.1, 0.03, 0.3)):
        run = await exp.start_run(display_name=f"demo run {i + 1}")
        await run.set_tags({"learning_rate": str(lr)})
        loss = 1.0
        for step in range(200):
            loss *= 1 - lr / 10
            run.log("loss", round(loss, 5), step=step)
        with tempfile.TemporaryDirectory() as tmp:
            summary = Path(tmp) / "summary.txt"
            summary.write_text(f"learning rate {lr}: final loss {loss:.4f}\n")
            await run.upload_file("outputs/summary.txt", summary)
        if lr < 0.3:
            await run.complete()
        else:
            await run.fail("demo: diverged on purpose")
    await demo_job(ws, say)
    for row in await exp.runs():
        final = (await ws.run(row["run_id"]).get_metrics("loss"))["loss"][-1]
        say(
            f"  {row['display_name']:<12} {row['status']:<10} lr={row['tags']['learning_rate']:<5}"
            f" final loss {final:.4f}  {row['run_id']}"
        )
    say(f"demo complete: experiment 'demo' has {len(await exp.runs())} runs")


async def adopt_for_local_person(settings: Settings) -> list[str]:
    """The migration of a home from before workspace membership: as the admin, make the local
    person a member (data scientist, compute operator) of every workspace that never had a
    member, as they could use every workspace then (docs/security.md)."""
    person = settings.nats_user
    assert person is not None
    conn = await bus_connect(admin_settings(settings), name="cairn-up-admin")
    try:
        adopted = await adopt_memberless(conn, person, LOCAL_ROLES)
    finally:
        await conn.close()
    if adopted:
        log.info("workspaces_adopted", user=person, workspaces=adopted)
    return adopted


async def _create_default(ws: AsyncWorkspace) -> bool:
    """Create the default workspace (get-or-create: its creator is its member); False, said in
    one line, when it exists and the admin has since removed the local person from it."""
    try:
        await ws.create(description="created by cairn up")
    except PermissionDenied as exc:
        print(
            f"warning: {exc.message}; the admin adds them back with 'cairn workspace add-member"
            f" {ws.name} {ws.settings.nats_user} --role data_scientist --role compute_operator'",
            flush=True,
        )
        return False
    return True


async def send_home_spools(settings: Settings, stop: asyncio.Event) -> None:
    """What scripts using this home spooled while the stack was down: sent at start, then
    every ``SEND_EVERY_S`` (:mod:`cairn.spool`), whether or not a local agent runs."""
    try:
        conn = await bus_connect(settings, name="cairn-up-spool", wait=True, stop=stop)
    except Unavailable:
        if stop.is_set():
            return  # stopped before the server answered
        raise
    try:
        await send_spools_periodically(conn, settings.home_path / "spool", stop)
    finally:
        await conn.close()


async def run_local_agent(settings: Settings, stop: asyncio.Event, slots: int) -> None:
    """The agent of the ``local`` compute target: a client of the bus like any agent."""
    from functools import partial

    from cairn.services.agent import AgentService

    if slots <= 0:
        await stop.wait()
        return
    factory = partial(AgentService, compute="local", slots=slots)
    agent = embedded_agent_settings(settings)  # the home's agent user, not the local person
    await run_services(agent, [factory], stop=stop, provision_streams=False)


DEMO_SCRIPT = """\
import argparse
from cairn.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--learning_rate", type=float, default=0.1)
lr = parser.parse_args().learning_rate
run = Run.get_context()
loss = 1.0
for step in range(200):
    loss *= 1 - lr / 10
    run.log("loss", round(loss, 5), step=step)
run.tag("learning_rate", str(lr))
print(f"trained on the local agent: final loss {loss:.4f}")
"""


async def demo_job(ws: AsyncWorkspace, say: Callable[[str], None]) -> None:
    """The same training as a job: snapshot, queue, the local agent runs it, output streamed."""
    from cairn.sdk import ScriptRunConfig
    from cairn.sdk._jobs import follow, submit

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train.py").write_text(DEMO_SCRIPT)
        arguments: list[str | float] = ["--learning_rate", 0.05]
        config = ScriptRunConfig(source_directory=tmp, script="train.py", arguments=arguments)
        run_id = await submit(ws, "demo", config, display_name="demo job")
    say(f"  submitted job {run_id} to compute 'local'; its output:")
    details = await follow(ws, run_id, out=lambda text: say("    " + text.rstrip()), timeout=120)
    say(f"  demo job {details['status']}")


#: pauses before restarting a nats-server that died under ``cairn up``; one per restart
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: a server that stayed up this long has recovered: its next exit starts the count again
HEALTHY_S = 60.0
_POLL_S = 0.2
#: how long the services may take to stop once the server is gone for good
_GONE_S = 3.0


def start_gateway(
    clients: Settings, stop: asyncio.Event, tasks: list[asyncio.Task[None]], port: int | None
) -> str | None:
    """The studio, served in this process until ``stop`` (added to ``tasks``); its URL, or
    None when ``port`` (else the settings' ``gateway_port``) is 0. It gets no credentials:
    whoever signs in brings theirs."""
    from cairn.services.gateway import Gateway

    port = clients.gateway_port if port is None else port
    if not port:
        return None
    settings = msgspec.structs.replace(
        clients, nats_user=None, nats_password=None, nats_creds=None, gateway_port=port
    )
    gateway = Gateway(settings)
    tasks.append(asyncio.create_task(gateway.run(stop)))
    return gateway.url


def _exit_reason(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _last_line(server: NatsServer) -> str:
    try:
        lines = server.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


async def supervise(
    server: NatsServer, stop: asyncio.Event, restarts: int = len(RESTART_DELAYS_S)
) -> None:
    """Keep ``server`` running until ``stop`` is set: a server that exits is started again on
    its store after a pause that grows (``RESTART_DELAYS_S``), at most ``restarts`` times in a
    row; then ``Unavailable`` says why, in one line. Clients reconnect on their own."""
    failures = 0
    while True:
        up_since = time.monotonic()
        proc = server.proc
        while proc is not None and proc.poll() is None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _POLL_S)
        if stop.is_set():
            return
        code = proc.returncode if proc is not None else -1
        if time.monotonic() - up_since >= HEALTHY_S:
            failures = 0
        reason = f"it exited ({_exit_reason(code)}): {_last_line(server)}"
        log.warning("nats_server_exited", code=code, pid=proc.pid if proc else None)
        while True:
            if failures >= restarts:
                raise Unavailable(
                    f"nats-server on {server.url} stopped and {failures} restarts did not keep "
                    f"it up; last, {reason} (log: {server.log})"
                )
            delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await server.start()
            except CairnError as exc:
                first = exc.message.splitlines()[0].rstrip(":")
                reason = f"its restart failed ({first}): {_last_line(server)}"
                log.warning("nats_server_restart_failed", attempt=failures, error=first)
                continue
            log.info("nats_server_restarted", attempt=failures, pid=server.running_pid())
            break


async def _first_failure(*tasks: asyncio.Task[None]) -> None:
    """Wait for every task (they end once ``stop`` is set); the first one to fail stops the
    rest by setting it (the caller's ``finally``) and its error is raised."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    await asyncio.gather(*tasks)


async def up(
    base: Settings,
    *,
    port: int,
    demo: bool,
    stop: asyncio.Event | None = None,
    local_slots: int | None = None,
    server_restarts: int = len(RESTART_DELAYS_S),
    tls: bool = False,
    tls_verify: bool = False,
    gateway_port: int | None = None,
) -> None:
    """The stack over ``base.home``. ``gateway_port``: where the studio listens (default: the
    settings' ``gateway_port``; 0: no gateway). ``tls``: the server requires TLS, with certificates
    under ``<home>/tls`` (made on first use, then reused); ``tls_verify`` also requires a
    client certificate, made there for the stack's own processes and the local person."""
    t0 = time.monotonic()
    home = base.home_path
    home.mkdir(parents=True, exist_ok=True)
    certs = None
    if tls or tls_verify:
        certs = ensure_certs(home / "tls", clients=[LOCAL_CLIENT] if tls_verify else [])
    server = NatsServer(home, port=port, tls=certs, tls_verify=tls_verify)
    await server.start()  # stops a server that a killed ``cairn up`` left behind
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.append(asyncio.create_task(supervise(server, stop, server_restarts)))
        assert server.credentials is not None
        service_settings = msgspec.structs.replace(
            client_settings(server, base),
            nats_user=SERVICE_USER,
            nats_password=server.credentials.service_password,
        )
        clients = client_settings(server, base)
        write_client_config(home / "config.json", clients)
        ready = asyncio.Event()
        services = asyncio.create_task(
            run_services(service_settings, list(all_services().values()), stop=stop, ready=ready)
        )
        tasks.append(services)
        await asyncio.wait(
            [*tasks, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED"
        )
        for task in tasks:
            if task.done():
                await task  # raises what made it stop
        await adopt_for_local_person(clients)
        slots = (os.cpu_count() or 1) if local_slots is None else local_slots
        tasks.append(asyncio.create_task(run_local_agent(clients, stop, slots)))
        async with connect(clients) as ws:
            member = await _create_default(ws)
            tasks.append(asyncio.create_task(send_home_spools(clients, stop)))
            studio = start_gateway(clients, stop, tasks, gateway_port)
            print(
                f"cairn is up in {time.monotonic() - t0:.1f}s: {server.url} "
                f"workspace={clients.workspace} config={home / 'config.json'}",
                flush=True,
            )
            if studio:
                print(f"studio at {studio} ('cairn studio' tells how to sign in)", flush=True)
            if demo and member:
                await run_demo(ws, lambda line: print(line, flush=True))
        print("press Ctrl-C to stop", flush=True)
        await _first_failure(*tasks)
    finally:
        stop.set()
        if tasks:  # a graceful end needs the server: without one, what is left is cut short
            alive = server.proc is not None and server.proc.poll() is None
            _, pending = await asyncio.wait(tasks, timeout=None if alive else _GONE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        server.stop()
        print("cairn stopped", flush=True)
