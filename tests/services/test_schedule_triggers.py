"""Event triggers: a new dataset version fires a schedule once, also across a restart of
the schedules service (its durable consumer resumes where it was acknowledged), on a server
of the test's own so that no other schedules service shares that consumer."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from cairn.bus import Connection
from cairn.embedded._up import all_services
from cairn.proto import subjects
from cairn.proto.assets import DataFile, DataPath, DatasetSpec, RegisterDataset
from cairn.proto.commands import CreateExperiment, CreateWorkspace
from cairn.proto.jobs import JobSpec, ListJobs, SubmitJob
from cairn.proto.schedules import CreateSchedule, EventTrigger, GetSchedule
from cairn.rpc import Client
from cairn.service import ProjectedService, ServiceFactory, run_services
from cairn.services.schedules import SchedulesService
from cairn.services.schedules._triggers import trigger_of
from cairn.settings import Settings
from tests.conftest import own_server


def cid() -> str:
    return uuid.uuid4().hex


@contextlib.asynccontextmanager
async def serving(settings: Settings, factories: list[ServiceFactory]) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_services(settings, factories, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 20)
    try:
        yield
    finally:
        stop.set()
        await task


async def new_version(client: Client, n: int) -> None:
    files = [DataFile(datastore="workspaceblobstore", path=f"d/{n}.csv", size=n, etag=f"e{n}")]
    spec = DatasetSpec(
        kind="file",
        paths=[DataPath(datastore="workspaceblobstore", pattern="d/*.csv")],
        files=files,
    )
    cmd = RegisterDataset(command_id=cid(), name="fresh data", spec=spec, create_new_version=True)
    await client.send(cmd)


async def fired(client: Client, n: int) -> list[dict[str, object]]:
    while True:
        fires = (await client.ask(GetSchedule(name="on-data"))).data["fires"]
        if sum(f["state"] == "submitted" for f in fires) >= n:
            return list(fires)
        await asyncio.sleep(0.05)


async def test_a_dataset_version_fires_once_and_a_restart_resumes(tmp_path: Path) -> None:
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(settings, state_dir=str(tmp_path / "state"))
    try:
        others = [f for name, f in all_services().items() if name != "schedules"]
        async with serving(settings, others):
            await _scenario(conn, settings)
    finally:
        await conn.close()
        server.stop()


async def _scenario(conn: Connection, settings: Settings) -> None:
    client = Client(conn, "trig")
    await client.send(CreateWorkspace(command_id=cid(), name="trig"))
    await client.send(CreateExperiment(command_id=cid(), name="retrain"))
    await new_version(client, 1)  # before the schedule: triggers nothing
    job = SubmitJob(
        command_id="x", run_id="x", experiment_name="retrain", job=JobSpec(command=["true"])
    )
    trigger = EventTrigger(on="dataset_version", name="fresh data")
    async with serving(settings, [SchedulesService]):
        create = CreateSchedule(command_id=cid(), name="on-data", trigger=trigger, submission=job)
        await client.send(create)
        await new_version(client, 2)
        first = await fired(client, 1)
    await new_version(client, 3)  # while no schedules service runs
    await new_version(client, 3)  # the same spec again: no new version, no fire
    async with serving(settings, [SchedulesService]):
        fires = await fired(client, 2)
        await new_version(client, 4)
        fires = await fired(client, 3)
    assert [f["covers"] for f in fires] == [1, 1, 1]
    assert fires[-1]["run_id"] == first[0]["run_id"]
    seqs = [f["event_seq"] for f in fires]
    assert len(set(seqs)) == 3 and seqs == sorted(seqs, reverse=True)
    jobs = (await client.ask(ListJobs())).data
    assert sorted(j["run_id"] for j in jobs) == sorted(str(f["run_id"]) for f in fires)


async def test_events_handled_out_of_order_each_fire(tmp_path: Path) -> None:
    """Two replicas on one consumer, or a nak redelivered after later events, hand the
    trigger an older dataset version after a newer one: both fire."""
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(settings, state_dir=str(tmp_path / "state"))
    try:
        others = [f for name, f in all_services().items() if name != "schedules"]
        async with serving(settings, others):
            service = SchedulesService(conn, settings)
            await ProjectedService.start(service)  # its commands and read model, no consumer
            try:
                await _out_of_order(conn, service)
            finally:
                stop = asyncio.Event()
                stop.set()
                await ProjectedService.run(service, stop)
    finally:
        await conn.close()
        server.stop()


async def _out_of_order(conn: Connection, service: SchedulesService) -> None:
    client = Client(conn, "order")
    await client.send(CreateWorkspace(command_id=cid(), name="order"))
    await client.send(CreateExperiment(command_id=cid(), name="retrain"))
    job = SubmitJob(
        command_id="x", run_id="x", experiment_name="retrain", job=JobSpec(command=["true"])
    )
    trigger = EventTrigger(on="dataset_version", name="fresh data")
    create = CreateSchedule(command_id=cid(), name="on-data", trigger=trigger, submission=job)
    await client.send(create)
    await new_version(client, 1)
    await new_version(client, 2)
    subject = subjects.event("order", "dataset", subjects.name_to_id("fresh data"))
    versions = [r for r in await service.store.read(subject) if trigger_of(r.envelope)]
    assert len(versions) == 2
    for recorded in reversed(versions):  # the newer first
        await service.triggers.handle(recorded.envelope, recorded.seq)
    fires = await fired(client, 2)
    assert sorted(f["event_seq"] for f in fires) == [r.seq for r in versions]
