"""Job leases against a real nats-server: an expiry is a compare-and-set on the run's lease key,
so a renewal that lands between an expiry's read and its write (or that a stale read missed)
makes the expiry fail, and no loss is decided; an expiry that won makes the next renewal
fail with ``StaleAttempt``. Outages too short for a reconcile pass to see still restart the
lease wait (the connection's callbacks stamp them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from cairn.bus import Connection, connect
from cairn.errors import StaleAttempt
from cairn.services.scheduler._leases import LeaseRead, Leases
from cairn.settings import Settings
from tests.cluster.proxy import Proxy
from tests.conftest import LEAKS_SOCKETS

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
