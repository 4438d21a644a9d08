"""Job leases against a real nats-server: an expiry is a compare-and-set on the run's lease key,
so a renewal that lands between an expiry's read and its write (or that a stale read missed)
makes the expiry fail, and no loss is decided; an expiry that won makes the next renewal
fail with ``StaleAttempt``, and a real agent then stops the job's process and reports nothing
of it. Outages too short for a reconcile pass to see still restart the lease wait (the
connection's callbacks stamp them)."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import structlog

from cairn.bus import Connection, EventStore, connect
from cairn.errors import PermissionDenied, StaleAttempt, Unavailable
from cairn.proto.events import RunAssigned, RunCompleted, RunFailed, RunRequeued
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.services.scheduler._leases import LeaseRead, Leases
from cairn.settings import Settings
from tests.cluster.proxy import Proxy
from tests.conftest import LEAKS_SOCKETS, Agents
from tests.services.test_jobs import history

LEASE_S = 0.3


@pytest.fixture
async def replicas(conn: Connection) -> AsyncIterator[tuple[Leases, Leases]]:
    """Two scheduler replicas' leases: the first expires, the second takes the reports."""
    made = [Leases(conn, LEASE_S), Leases(conn, LEASE_S)]
    for leases in made:
        await leases.start()
    yield made[0], made[1]
    for leases in made:
        await leases.stop()


def _run() -> tuple[str, str]:
    return "t" + uuid.uuid4().hex[:12], uuid.uuid4().hex[:16]


async def _until_expired(leases: Leases, ws: str, run_id: str) -> None:
    async with asyncio.timeout(30):
        while not leases.expired(ws, run_id, 1, LEASE_S, 0.0):
            await asyncio.sleep(0.05)


async def _until_mirrored(leases: Leases, ws: str, run_id: str) -> None:
    async with asyncio.timeout(30):
        while (ws, run_id) not in leases.renewed:
            await asyncio.sleep(0.02)


async def test_a_renewal_between_an_expiry_read_and_its_write_makes_the_expiry_fail(
    replicas: tuple[Leases, Leases],
) -> None:
    expiring, reporting = replicas
    ws, run_id = _run()
    await reporting.renew(ws, run_id, 1)
    await _until_mirrored(expiring, ws, run_id)
    await _until_expired(expiring, ws, run_id)
    lease = await expiring.read(ws, run_id, 1, LEASE_S, 0.0)
    assert lease is not None and not lease.taken

    await reporting.renew(ws, run_id, 1)  # the agent's report lands now
    decided: list[str] = []

    async def lose() -> None:
        decided.append("LoseAttempt")

    assert not await expiring.expire(lease, lose)
    assert decided == []
    value, _ = await expiring.keys.leader(ws, run_id)
    assert value is not None and not value.lost
    await reporting.renew(ws, run_id, 1)  # the attempt keeps its lease


async def test_an_expiry_that_won_refuses_the_next_renewal(
    replicas: tuple[Leases, Leases],
) -> None:
    expiring, reporting = replicas
    ws, run_id = _run()
    await _until_expired(expiring, ws, run_id)  # never renewed: the key does not exist
    lease = await expiring.read(ws, run_id, 1, LEASE_S, 0.0)
    assert lease is not None and lease.revision == 0
    decided: list[str] = []

    async def lose() -> None:
        decided.append("LoseAttempt")

    assert await expiring.expire(lease, lose)
    assert decided == ["LoseAttempt"]
    with pytest.raises(StaleAttempt):
        await reporting.renew(ws, run_id, 1)
    # a decision that did not follow its marker is found again, and taken without a write
    again = await expiring.read(ws, run_id, 1, LEASE_S, 0.0)
    assert again is not None and again.taken
    await reporting.renew(ws, run_id, 2)  # the next attempt renews over the marker


async def test_an_expiry_decided_from_a_stale_read_is_refused(
    replicas: tuple[Leases, Leases],
) -> None:
    """A replica whose mirror stopped following the bucket (as a partitioned node's copy
    does) sees the attempt silent; the leader has a newer renewal, so no expiry is read, and
    a write built on the stale revision fails."""
    stale, reporting = replicas
    ws, run_id = _run()
    await reporting.renew(ws, run_id, 1)
    await _until_mirrored(stale, ws, run_id)
    old_revision = stale.keys.changed[(ws, run_id)][0]
    await stale.keys.stop()  # its copy of the bucket falls behind from here
    await reporting.renew(ws, run_id, 1)
    await _until_expired(stale, ws, run_id)

    assert await stale.read(ws, run_id, 1, LEASE_S, 0.0) is None
    decided: list[str] = []

    async def lose() -> None:
        decided.append("LoseAttempt")

    lease = LeaseRead(ws=ws, run_id=run_id, attempt=1, revision=old_revision)
    assert not await stale.expire(lease, lose)
    assert decided == []
    await reporting.renew(ws, run_id, 1)


@LEAKS_SOCKETS
async def test_a_short_outage_restarts_the_lease_wait(
    service_settings: Settings, nats_py_leaks: None
) -> None:
    """The link drops and comes back between two reconcile passes: the client's callbacks
    stamp it, and no lease expires for one lease from then."""
    host, port = service_settings.nats_url.removeprefix("nats://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    conn = await connect(msgspec.structs.replace(service_settings, nats_url=proxy.url))
    try:
        leases = Leases(conn, 60.0)
        ws, run_id = _run()
        leases.started -= 120  # started long ago, and the attempt silent as long
        leases.logged[(ws, run_id)] = (1, 0.0, time.monotonic() - 120)
        assert leases.expired(ws, run_id, 1, 60.0, 0.0)
        before = conn.link_changed
        proxy.cut()
        proxy.heal()
        async with asyncio.timeout(30):
            while not (conn.nc.is_connected and conn.link_changed > before):
                await asyncio.sleep(0.02)
        assert not leases.expired(ws, run_id, 1, 60.0, 0.0)
    finally:
        await conn.close()
        await proxy.close()


@LEAKS_SOCKETS
async def test_a_renewal_the_bucket_cannot_take_now_is_unavailable(
    service_settings: Settings, nats_py_leaks: None
) -> None:
    """No answer from the bucket (as during an election, or cut off): a typed ``Unavailable``,
    which the agent's next report retries, not an internal error."""
    host, port = service_settings.nats_url.removeprefix("nats://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    settings = msgspec.structs.replace(service_settings, nats_url=proxy.url, request_timeout=1.0)
    conn = await connect(settings)
    leases = Leases(conn, 60.0)
    try:
        await leases.start()
        ws, run_id = _run()
        await leases.renew(ws, run_id, 1)
        proxy.cut()
        with pytest.raises(Unavailable, match="cannot be renewed now"):
            await leases.renew(ws, run_id, 1)
    finally:
        proxy.heal()
        await leases.stop()
        await conn.close()
        await proxy.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_an_agent_whose_lease_was_taken_back_stops_the_job_and_reports_nothing(
    ws: AsyncWorkspace, agents: Agents, conn: Connection, store: EventStore, tmp_path: Path
) -> None:
    """The lease of a running attempt is taken back as a scheduler's expiry does (its lost
    marker written by compare-and-set) while the agent is alive and reporting: the agent's
    next renewal is refused, it stops the job's process (which ignores SIGTERM: killed after
    the grace period) and records nothing for that attempt; the run completes as attempt 2."""
    signals = tmp_path / "signals"  # beside the agent's folder: the job may write here
    signals.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(
        textwrap.dedent(
            f"""
            import os, pathlib, signal, time
            attempt = os.environ["CAIRN_ATTEMPT"]
            if attempt == "1":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                tmp = pathlib.Path({str(signals)!r}) / "pid.tmp"
                tmp.write_text(str(os.getpid()))
                tmp.rename(tmp.with_name("pid"))
                time.sleep(600)
            print("done on attempt", attempt)
            """
        )
    )
    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    pid_file = signals / "pid"
    async with asyncio.timeout(60):
        while not pid_file.exists():
            await asyncio.sleep(0.05)
    pid = int(pid_file.read_text())
    assert _alive(pid)

    leases = Leases(conn, 2.0)
    await leases.start()
    with structlog.testing.capture_logs() as logs:
        try:
            async with asyncio.timeout(30):  # a renewal may land between the read and the write
                while True:
                    _, revision = await leases.keys.leader(ws.name, run_id)
                    lease = LeaseRead(ws=ws.name, run_id=run_id, attempt=1, revision=revision)
                    if await leases.take_back(lease):
                        break
        finally:
            await leases.stop()
        async with asyncio.timeout(60):
            while _alive(pid):
                await asyncio.sleep(0.05)
        details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Completed", details
    events = await history(store, ws.name, run_id)
    assert [e.attempt for e in events if isinstance(e, RunAssigned)] == [1, 2]
    assert [e.attempt for e in events if isinstance(e, RunRequeued)] == [1]
    ends = [e for e in events if isinstance(e, (RunCompleted, RunFailed))]
    assert [(type(e), e.attempt) for e in ends] == [(RunCompleted, 2)]
    lost = [e for e in logs if e["event"] == "lease_lost" and e["run_id"] == run_id]
    assert lost and {e["attempt"] for e in lost} == {1}, lost
    stale = [e for e in logs if e["event"] == "attempt_stale" and e["run_id"] == run_id]
    assert [e["attempt"] for e in stale] == [1]
    assert not [e for e in logs if e["event"] == "attempt_finished" and e["attempt"] == 1]


async def test_a_renewal_refused_by_permissions_names_it(agent_settings: Settings) -> None:
    """A scheduler whose user may not read the leases bucket (here an agent's) gets
    ``PermissionDenied`` naming the subject on renewal, not ``Unavailable`` (which the agent
    retries until every lease is lost, with no cause named)."""
    settings = msgspec.structs.replace(agent_settings, request_timeout=1.0)
    conn = await connect(settings)
    try:
        leases = Leases(conn, 60.0)
        ws, run_id = _run()
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(PermissionDenied, match=r"stream\.msg\.get\.kv_"):
                await leases.renew(ws, run_id, 1)
        assert any(e["event"] == "lease_renew_refused" for e in logs), logs
    finally:
        await conn.close()
