"""Schedules fire on a clock the test moves: catch-up after an outage (once, or skipped),
two replicas firing once per due time; the run records the fire that submitted it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, EventStore
from cairn.embedded._admin import remove_member
from cairn.errors import NotFound, PermissionDenied
from cairn.projection import Delivered, Tables
from cairn.proto import subjects
from cairn.proto.commands import CreateExperiment, CreateWorkspace
from cairn.proto.events import (
    Event,
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleUpdated,
)
from cairn.proto.jobs import GetJob, JobSpec, ListJobs, ScheduledBy, SubmitJob
from cairn.proto.schedules import CatchUp, CreateSchedule, GetSchedule, RecurrenceTrigger
from cairn.proto.subjects import name_to_id
from cairn.rpc import Client
from cairn.service import run_services
from cairn.services.schedules import SchedulesService
from cairn.services.schedules._projection import SchedulesProjection
from cairn.settings import Settings
from tests.conftest import Agents, add_people
from tests.helpers import envelope

#: the tests' time: years after the session's real clock, so the session's own schedules
#: service never finds these schedules due
T0 = datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)
START = T0.timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cid() -> str:
    return uuid.uuid4().hex


@contextlib.asynccontextmanager
async def replica(settings: Settings, state: Path, clock: Clock) -> AsyncIterator[None]:
    """A schedules service of its own (its read model in ``state``) on ``clock``."""
    mine = msgspec.structs.replace(settings, state_dir=str(state))
    stop, ready = asyncio.Event(), asyncio.Event()
    factory = functools.partial(SchedulesService, clock=clock, tick_s=0.05)
    task = asyncio.create_task(run_services(mine, [factory], stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield
    finally:
        stop.set()
        await task


async def until(
    client: Client, name: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The schedule as shown once ``done`` holds for it (every fire settled: submitted,
    skipped or failed)."""
    while True:
        try:
            shown: dict[str, Any] = (await client.ask(GetSchedule(name=name))).data
        except NotFound:  # its read model has not seen the schedule's creation yet
            await asyncio.sleep(0.05)
            continue
        settled = all(f["state"] != "fired" for f in shown["fires"])
        if settled and done(shown):
            return shown
        await asyncio.sleep(0.05)


def completed(shown: dict[str, Any]) -> bool:
    return any(f["run_status"] == "Completed" for f in shown["fires"])


def submitted(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: sum(f["state"] == "submitted" for f in s["fires"]) == n


async def every_minute(client: Client, name: str, catch_up: CatchUp = "once") -> str:
    """A schedule every minute from T0 of a job in an experiment of its own."""
    experiment = f"sched-{cid()[:8]}"
    await client.send(CreateExperiment(command_id=cid(), name=experiment))
    job = SubmitJob(
        command_id="x", run_id="x", experiment_name=experiment, job=JobSpec(command=["true"])
    )
    trigger = RecurrenceTrigger(frequency="minute", start_time=T0)
    create = CreateSchedule(
        command_id=cid(), name=name, trigger=trigger, submission=job, catch_up=catch_up
    )
    await client.send(create)
    return experiment


async def runs_of(client: Client, experiment: str) -> list[str]:
    jobs = (await client.ask(ListJobs(limit=1000))).data
    return sorted(j["run_id"] for j in jobs if j["experiment_name"] == experiment)


async def test_a_stop_of_three_minutes_gives_one_catch_up_run(
    client: Client, service_settings: Settings, tmp_path: Path
) -> None:
    experiment = await every_minute(client, "each-minute")
    clock = Clock(START + 5)
    async with replica(service_settings, tmp_path / "state", clock):
        await until(client, "each-minute", submitted(1))
    clock.now = START + 3 * 60 + 40  # stopped for three minutes: three due times missed
    async with replica(service_settings, tmp_path / "state", clock):
        shown = await until(client, "each-minute", submitted(2))
    fires = shown["fires"]
    assert [(f["covers"], f["due"]) for f in fires] == [
        (3, "2030-01-01T12:03:10Z"),
        (1, "2030-01-01T12:00:10Z"),
    ]
    assert await runs_of(client, experiment) == sorted(f["run_id"] for f in fires)
    job = (await client.ask(GetJob(run_id=fires[0]["run_id"]))).data
    assert job["scheduled"] == {
        "schedule": "each-minute",
        "due": START + 180,
        "event_seq": None,
    }
    assert shown["next_dues"][:2] == ["2030-01-01T12:04:10Z", "2030-01-01T12:05:10Z"]


async def test_skip_runs_none_of_the_missed(
    client: Client, service_settings: Settings, tmp_path: Path
) -> None:
    experiment = await every_minute(client, "skipping", catch_up="skip")
    clock = Clock(START + 3 * 60 + 40)  # four due times passed before any service ran
    async with replica(service_settings, tmp_path / "state", clock):
        shown = await until(client, "skipping", lambda s: bool(s["fires"]))
    assert [(f["state"], f["covers"], f["run_id"]) for f in shown["fires"]] == [
        ("skipped", 4, None)
    ]
    assert await runs_of(client, experiment) == []


async def test_two_replicas_fire_once_per_due_time(
    client: Client, service_settings: Settings, tmp_path: Path
) -> None:
    experiment = await every_minute(client, "twice-served")
    clock = Clock(START + 1)
    async with (
        replica(service_settings, tmp_path / "a", clock),
        replica(service_settings, tmp_path / "b", clock),
    ):
        for n in (1, 2, 3):
            clock.now = START + (n - 1) * 60 + 1
            shown = await until(client, "twice-served", submitted(n))
    fires = shown["fires"]
    assert [f["covers"] for f in fires] == [1, 1, 1]
    assert await runs_of(client, experiment) == sorted(f["run_id"] for f in fires)


async def test_a_schedule_stops_when_its_creator_leaves(
    client: Client,
    people: dict[str, Connection],
    admin_conn: Connection,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    """A schedule acts for the person who made it: once they are no longer a member, its
    fires are recorded as refused and submit nothing."""
    await add_people(admin_conn, client.workspace, "dana")
    dana = Client(people["dana"], client.workspace)
    experiment = await every_minute(dana, "danas")
    await remove_member(admin_conn, client.workspace, "dana")
    async with replica(service_settings, tmp_path / "state", Clock(START + 5)):
        shown = await until(client, "danas", lambda s: bool(s["fires"]))
    [fire] = shown["fires"]
    assert fire["state"] == "failed" and fire["run_status"] is None
    assert "dana, who created the schedule, is no longer a member" in fire["error"]
    assert shown["created_by"] == "dana"
    assert await runs_of(client, experiment) == []


async def test_a_member_cannot_claim_a_real_fire(
    client: Client,
    people: dict[str, Connection],
    admin_conn: Connection,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    """A fire's run id is shown to every reader (``cairn schedule show``); a member who sends
    a submission under it, as that fire, is refused: only the schedules service may."""
    await add_people(admin_conn, client.workspace, "dana")
    dana = Client(people["dana"], client.workspace)
    experiment = await every_minute(dana, "left-behind")
    await remove_member(admin_conn, client.workspace, "dana")  # the fire is not submitted
    async with replica(service_settings, tmp_path / "state", Clock(START + 5)):
        shown = await until(client, "left-behind", lambda s: bool(s["fires"]))
    [fire] = shown["fires"]
    claim = SubmitJob(
        command_id=cid(),
        run_id=fire["run_id"],
        experiment_name=experiment,
        job=JobSpec(command=["true"]),
        scheduled=ScheduledBy(schedule="left-behind", due=START),
    )
    with pytest.raises(PermissionDenied, match="only the schedules service"):
        await client.send(claim)
    assert await runs_of(client, experiment) == []


async def test_a_run_cannot_claim_a_fire_that_never_was(client: Client) -> None:
    experiment = await every_minute(client, "claimed")
    forged = SubmitJob(
        command_id=cid(),
        run_id="forged-run",
        experiment_name=experiment,
        job=JobSpec(command=["true"]),
        scheduled=ScheduledBy(schedule="claimed", due=START),
    )
    with pytest.raises(PermissionDenied, match="only the schedules service"):
        await client.send(forged)


async def test_one_name_in_two_workspaces_fires_two_runs(
    client: Client,
    client_conn: Connection,
    agent_settings: Settings,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    """A schedule of the same name in two workspaces fires at one due time: two runs, each
    with events of its own (run ids, and the ids derived from them, are per workspace)."""
    other = Client(client_conn, "t" + cid()[:12])
    await other.send(CreateWorkspace(command_id=cid(), name=other.workspace))
    pools = []
    for c in (client, other):
        await every_minute(c, "twin")
        settings = msgspec.structs.replace(
            agent_settings, workspace=c.workspace, state_dir=str(tmp_path / c.workspace)
        )
        pools.append(Agents(settings))
    try:
        for pool in pools:
            await pool.start()
        async with replica(service_settings, tmp_path / "state", Clock(START + 5)):
            done = [await until(c, "twin", completed) for c in (client, other)]
    finally:
        for pool in pools:
            await pool.close()
    runs = [shown["fires"][0]["run_id"] for shown in done]
    assert runs[0] != runs[1]
    for c, run_id in zip((client, other), runs, strict=True):
        job = (await c.ask(GetJob(run_id=run_id))).data
        assert job["status"] == "Completed"


async def test_a_schedule_that_cannot_fire_holds_up_no_other(
    client: Client, store: EventStore, service_settings: Settings, tmp_path: Path
) -> None:
    """A schedule whose log says what its read model could not take (an update to a time
    zone nobody knows, set aside by the projection) fails at each pass, alone: a schedule
    after it still fires."""
    await every_minute(client, "broken")
    experiment = await every_minute(client, "sound")
    shown = (await client.ask(GetSchedule(name="broken"))).data
    submission = msgspec.convert(shown["submission"], SubmitJob)
    nowhere = RecurrenceTrigger(frequency="minute", start_time=T0, time_zone="Nowhere/Else")
    updated = ScheduleUpdated(trigger=nowhere, submission=submission, at=START)
    sid = name_to_id("broken")
    subject = subjects.event(client.workspace, "schedule", sid)
    event = envelope(client.workspace, sid, updated, kind="schedule")
    await store.append(subject, [event], expected_seq=None, msg_id=cid())
    async with replica(service_settings, tmp_path / "state", Clock(START + 5)):
        await until(client, "sound", submitted(1))
    assert len(await runs_of(client, experiment)) == 1


def test_the_unsent_fires_of_a_deleted_schedule_are_dropped() -> None:
    """A fire not yet sent when its schedule is deleted is never sent: the read model shows it
    dropped (and the firing pass no longer finds it among the fires to send)."""
    projection = SchedulesProjection()
    db = sqlite3.connect(":memory:", isolation_level=None)
    t = Tables(projection.name, 1)
    projection.create(db, t)
    job = SubmitJob(command_id="x", run_id="x", experiment_name="e", job=JobSpec(command=["t"]))
    trigger = RecurrenceTrigger(frequency="minute", start_time=T0)
    created = ScheduleCreated(name="gone", incarnation=1, trigger=trigger, submission=job, at=0)
    events: list[Event] = [
        created,
        ScheduleFired(due=START, run_id="r1", at=START),
        ScheduleDeleted(at=START + 1),
    ]
    sid = name_to_id("gone")
    for seq, event in enumerate(events, 1):
        env = envelope("lab", sid, event, kind="schedule")
        projection.apply(db, t, Delivered(seq, f"cairn.ev.lab.schedule.{sid}", env))
    rows = db.execute(f"SELECT run_id, state FROM {t('fires')}").fetchall()
    db.close()
    assert rows == [("r1", "dropped")]
