"""``cairn up``: the whole stack in one process over ``$CAIRN_HOME``."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from cairn.embedded._server import SERVICE_USER, NatsServer, write_private
from cairn.log import get_logger
from cairn.sdk import AsyncWorkspace, connect
from cairn.service import ServiceFactory, install_stop_signals, run_services
from cairn.settings import Settings

__all__ = ["all_services", "run_demo", "up"]

log = get_logger("cairn.up")


def all_services() -> dict[str, ServiceFactory]:
    from cairn.services.artifacts import ArtifactsService
    from cairn.services.ingester import IngesterService
    from cairn.services.registry import RegistryService
    from cairn.services.scheduler import SchedulerService
    from cairn.services.tracking import TrackingService

    return {
        "tracking": TrackingService,
        "ingester": IngesterService,
        "artifacts": ArtifactsService,
        "registry": RegistryService,
        "scheduler": SchedulerService,
    }


def client_settings(server: NatsServer, base: Settings) -> Settings:
    assert server.credentials is not None
    return msgspec.structs.replace(
        base,
        home=str(server.home),
        nats_url=server.url,
        nats_user=server.credentials.client_user,
        nats_password=server.credentials.client_password,
    )


def write_client_config(path: Path, settings: Settings) -> None:
    """The file ``load_settings`` / ``Workspace.from_config()`` read: URL, user, workspace."""
    keys = ("nats_url", "nats_user", "nats_password", "workspace")
    body = {k: getattr(settings, k) for k in keys}
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
            run.log("loss", "scalar", round(loss, 5), step)
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


async def run_local_agent(settings: Settings, stop: asyncio.Event, slots: int) -> None:
    """The agent of the ``local`` compute target: a client of the bus like any agent."""
    from functools import partial

    from cairn.services.agent import AgentService

    if slots <= 0:
        await stop.wait()
        return
    factory = partial(AgentService, compute="local", slots=slots)
    await run_services(settings, [factory], stop=stop, provision_streams=False)


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


async def up(
    base: Settings,
    *,
    port: int,
    demo: bool,
    stop: asyncio.Event | None = None,
    local_slots: int | None = None,
) -> None:
    t0 = time.monotonic()
    home = base.home_path
    home.mkdir(parents=True, exist_ok=True)
    server = NatsServer(home, port=port)
    await server.start()
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    try:
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
        await asyncio.wait(
            [services, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED"
        )
        if services.done():
            await services  # raises what made it stop
        slots = (os.cpu_count() or 1) if local_slots is None else local_slots
        agent = asyncio.create_task(run_local_agent(clients, stop, slots))
        async with connect(clients) as ws:
            await ws.create(description="created by cairn up")
            print(
                f"cairn is up in {time.monotonic() - t0:.1f}s: {server.url} "
                f"workspace={clients.workspace} config={home / 'config.json'}",
                flush=True,
            )
            if demo:
                await run_demo(ws, lambda line: print(line, flush=True))
        print("press Ctrl-C to stop", flush=True)
        await services
        await agent
    finally:
        stop.set()
        server.stop()
        print("cairn stopped", flush=True)
