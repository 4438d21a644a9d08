"""The admin alone deletes and reconfigures streams; its password lives apart from the others."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import msgspec
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StreamConfig

from cairn.bus import connect
from cairn.embedded import NatsServer
from cairn.embedded._auth import ADMIN_USER
from tests.conftest import own_server


async def test_only_the_admin_deletes_a_stream(tmp_path: Path) -> None:
    server, settings, service = await own_server(tmp_path, request_timeout=1.0)
    admin = None
    try:
        await service.js.add_stream(StreamConfig(name="SCRATCH", subjects=["scratch.>"]))
        for api in ("DELETE", "PURGE", "UPDATE", "SNAPSHOT"):
            try:
                await service.nc.request(f"$JS.API.STREAM.{api}.SCRATCH", b"{}", timeout=1)
            except NatsTimeout:
                pass
        await asyncio.sleep(0.2)
        assert all(service.denied(f"$JS.API.STREAM.{a}.SCRATCH") for a in ("DELETE", "PURGE"))
        assert (await service.js.stream_info("SCRATCH")).config.name == "SCRATCH"
        file = server.home / "admin.json"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        written = json.loads(file.read_text())
        assert written["user"] == ADMIN_USER
        assert written["password"] not in (server.home / "credentials.json").read_text()
        as_admin = msgspec.structs.replace(
            settings, nats_user=ADMIN_USER, nats_password=written["password"]
        )
        admin = await connect(as_admin)
        assert await admin.js.delete_stream("SCRATCH")
    finally:
        for c in (admin, service):
            if c is not None:
                await c.close()
        server.stop()


def test_the_admin_password_is_kept_apart_and_across_restarts(tmp_path: Path) -> None:
    first = NatsServer(tmp_path, port=0)
    password = first.admin_password
    again = NatsServer(tmp_path, port=0)
    assert again.admin_password == password and password in again.accounts_text()
    assert password not in (tmp_path / "credentials.json").read_text()
