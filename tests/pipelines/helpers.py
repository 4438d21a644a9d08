"""Pipeline files on disk and a wait for a pipeline run's end."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import connect
from cairn.embedded._up import all_services
from cairn.proto.commands import CreateWorkspace
from cairn.proto.pipelines import SubmitPipeline
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, load_pipeline_file, submit_pipeline
from cairn.service import run_services
from tests.conftest import JOB_SETTINGS, Agents, own_server, settings_for

PREP = """\
import argparse, os, sys
p = argparse.ArgumentParser()
p.add_argument("--raw")
p.add_argument("--out")
a = p.parse_args()
for name in sorted(os.listdir(a.raw)):
    text = open(os.path.join(a.raw, name)).read()
    open(os.path.join(a.out, name), "w").write(text.upper())
print("prep wrote", sorted(os.listdir(a.out)))
"""

TRAIN = """\
import argparse, os
from cairn.sdk import Run
p = argparse.ArgumentParser()
p.add_argument("--data")
a = p.parse_args()
for name in sorted(os.listdir(a.data)):
    print(name, "=", open(os.path.join(a.data, name)).read().strip())
run = Run.get_context()
print("parent", run.parent.id if run.parent else None)
"""

TWO_STEPS = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: two steps
experiment_name: pipes
description: prep then train
tags: {team: a}
settings:
  default_compute: azureml:local
inputs:
  raw:
    type: uri_folder
    path: ./data
jobs:
  prep:
    code: ./src
    command: python prep.py --raw ${{inputs.raw}} --out ${{outputs.data}}
    inputs:
      raw: ${{parent.inputs.raw}}
    outputs:
      data:
        mode: rw_mount
  train:
    code: ./src
    command: python train.py --data ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
"""


def write_pipeline(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """The pipeline file and its code (``src/``) and data (``data/``) in ``folder``."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "src" / "prep.py").write_text(PREP)
    (folder / "src" / "train.py").write_text(TRAIN)
    (folder / "data" / "a.csv").write_text("x,y\n1,2\n")
    for name, content in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(content))
    path = folder / "pipeline.yml"
    path.write_text(text)
    return path


async def submit(ws: AsyncWorkspace, path: Path) -> SubmitPipeline:
    return await submit_pipeline(ws, load_pipeline_file(path))


async def wait_pipeline(ws: AsyncWorkspace, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The pipeline once it has ended."""
    async with asyncio.timeout(timeout):
        while True:
            found = await ws.run(run_id).pipeline()
            if found["status"] in ("Completed", "Failed", "Canceled"):
                return found
            await asyncio.sleep(0.2)


async def logs(ws: AsyncWorkspace, run_id: str) -> str:
    chunks: list[str] = []
    await ws.run(run_id).print_logs(chunks.append)
    return "".join(chunks)


class OwnStack:
    """A server of the test's own with the services it names running in this process (more
    can be started later), an agent pool and a workspace."""

    def __init__(self, home: Path, **settings: Any) -> None:
        self.home = home
        self.extra = settings
        self.stops: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, services: list[str]) -> AsyncWorkspace:
        self.server, service_settings, self.conn = await own_server(
            self.home / "server", request_timeout=2.0
        )
        self.settings = msgspec.structs.replace(
            service_settings,
            state_dir=str(self.home / "state"),
            artifacts_dir=str(self.home / "artifacts"),
            datastore_roots=str(self.home),
            **JOB_SETTINGS,
            **self.extra,
        )
        await self.add(services)
        client_settings = settings_for(
            self.server, service=False, request_timeout=2.0, **JOB_SETTINGS, **self.extra
        )
        self.client_conn = await connect(client_settings)
        name = "o" + uuid.uuid4().hex[:10]
        await Client(self.client_conn, name).send(
            CreateWorkspace(command_id=uuid.uuid4().hex, name=name)
        )
        self.agents = Agents(
            settings_for(
                self.server,
                service=False,
                agent=True,
                workspace=name,
                state_dir=str(self.home / "agent"),
                **JOB_SETTINGS,
            )
        )
        self.ws = AsyncWorkspace(self.client_conn, name, client_settings)
        return self.ws

    async def add(self, services: list[str]) -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        factories = [all_services()[name] for name in services]
        self.tasks.append(
            asyncio.create_task(run_services(self.settings, factories, stop=stop, ready=ready))
        )
        self.stops.append(stop)
        await asyncio.wait_for(ready.wait(), 15)

    async def close(self) -> None:
        if hasattr(self, "agents"):
            await self.agents.close()
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if hasattr(self, "ws"):
            await self.ws.close()
            await self.client_conn.close()
        if hasattr(self, "conn"):
            await self.conn.close()
            self.server.stop()
