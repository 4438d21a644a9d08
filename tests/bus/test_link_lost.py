"""A request whose link is lost gives up then (``LinkLost``), not at the end of its timeout:
in a cluster the caller retries over the node it reconnects to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cairn.bus import connect
from cairn.bus._connect import LinkLost
from cairn.rpc import PING_SUBJECT
from tests.conftest import LEAKS_SOCKETS, own_server


@LEAKS_SOCKETS
async def test_a_request_gives_up_when_its_link_is_lost(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    server, settings, conn = await own_server(
        tmp_path / "home", request_timeout=1.0, provisioned=False
    )
    silent = await connect(settings, name="silent")
    heard = asyncio.Event()

    async def never_answers(msg: object) -> None:
        heard.set()

    try:
        await silent.nc.subscribe(PING_SUBJECT, cb=never_answers)
        await silent.nc.flush()
        # far longer than the wait below: only the lost link can end it in time
        ask = asyncio.create_task(conn.request(PING_SUBJECT, b"", timeout=600))
        await asyncio.wait_for(heard.wait(), 30)
        server.kill()
        with pytest.raises(LinkLost):
            await asyncio.wait_for(ask, 60)
        assert conn.link_changed > 0
    finally:
        await silent.close()
        await conn.close()
        server.stop()
