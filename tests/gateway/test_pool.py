"""The gateway's connection pool under requests from no one in particular: what a wrong or
malformed login leaves behind is bounded, a user name refused too often is refused without
connecting for a while, and the idle reaper never closes a connection in use."""

from __future__ import annotations

import asyncio
import base64
import secrets

import httpx
import msgspec
import pytest

from cairn.embedded._server import NatsServer
from cairn.errors import Unauthenticated
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import Gateway, _pool
from cairn.services.gateway._app import running
from cairn.services.gateway._pool import FAILURES, Pool
from cairn.settings import Settings
from cairn.tokens import format_token, is_user_name, parse_token
from tests.gateway.conftest import login_password, sign_in


def _pool_of(client_settings: Settings) -> Pool:
    settings = msgspec.structs.replace(client_settings, nats_user=None, nats_password=None)
    return Pool(settings)


def test_a_token_names_a_person_and_a_token_id() -> None:
    good = format_token("alice~0123456789ab", "secret")
    assert parse_token(good) == ("alice~0123456789ab", "secret")
    for user in [
        "alice",  # no token mark
        "a~b",  # the id is not one cairn token create makes
        "alice~0123456789AB",
        "alice~0123456789abc",
        "Alice~0123456789ab",  # not a person's name
        "cairn-agent~0123456789ab",  # the stack's own names
        "~0123456789ab",
        "alice~0123456789ab~0123456789ab",
        "al ice~0123456789ab",
    ]:
        with pytest.raises(Unauthenticated):
            parse_token(format_token(user, "secret"))
    assert not is_user_name("x" * 40) and is_user_name("bob") and not is_user_name("bob~")


async def test_malformed_user_names_never_connect_nor_stay(client_settings: Settings) -> None:
    pool = _pool_of(client_settings)
    try:
        for n in range(50):
            with pytest.raises(Unauthenticated):
                await pool.principal(f"Not A Name {n}", "pw", "session")
        assert pool._reaper is not None  # started on the first use, not the first success
        assert not pool._refused and not pool._opening and not pool._failures
    finally:
        await pool.close()


async def test_refused_logins_leave_a_bounded_trace(
    client_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool, "MOST_REFUSED", 3)
    pool = _pool_of(client_settings)
    try:
        names = [f"nobody-{secrets.token_hex(4)}" for _ in range(5)]
        for name in names:
            with pytest.raises(Unauthenticated, match="wrong user name or password"):
                await pool.principal(name, "wrong", "session")
        assert not pool._opening  # each name's lock went once its connection was tried
        assert [user for user, _ in pool._refused] == names[-3:]  # the oldest went first
        assert list(pool._failures) == names[-3:]
    finally:
        await pool.close()


async def test_a_user_name_refused_too_often_is_refused_without_connecting(
    client_settings: Settings, nats_server: NatsServer
) -> None:
    user, password = login_password(nats_server)
    pool = _pool_of(client_settings)
    try:
        for n in range(FAILURES):
            with pytest.raises(Unauthenticated, match="wrong user name or password"):
                await pool.principal(user, f"wrong-{n}", "session")
        # now even the right password is refused, without a connection being tried
        with pytest.raises(Unauthenticated, match=r"too many failed sign-ins; try again in \d+ s"):
            await pool.principal(user, password, "session")
        assert user not in pool._entries
        # a name that did not fail is served as ever
        other = _pool_of(client_settings)
        try:
            assert (await other.principal(user, password, "session")).user == user
        finally:
            await other.close()
    finally:
        await pool.close()


async def test_the_login_page_says_when_a_name_is_refused_for_a_while(
    gateway: Gateway, client: Client
) -> None:
    name = f"nobody-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for _ in range(FAILURES):
            reply = await sign_in(http, name, secrets.token_hex(8))
            assert reply.status_code == 401 and "wrong user name or password" in reply.text
        reply = await sign_in(http, name, secrets.token_hex(8))
        assert reply.status_code == 401
        assert "too many failed sign-ins; try again in" in reply.text
        token = format_token(f"{name}~0123456789ab", "secret")
        malformed = "cairn_" + base64.urlsafe_b64encode(b"x~y").decode().rstrip("=") + ".s"
        for bad in (token, malformed):
            refused = await http.get(
                f"/w/{client.workspace}/experiments", headers={"authorization": f"Bearer {bad}"}
            )
            assert refused.status_code == 401


async def test_a_connection_in_use_outlives_a_short_idle_time(
    ws: AsyncWorkspace, nats_server: NatsServer, client_settings: Settings
) -> None:
    """A live stream held far longer than ``idle_s`` keeps its connection; once it ends the
    connection is idle, and the reaper closes it."""
    run = await (await ws.experiment("held")).start_run()
    run.log("loss", 1.0, step=0)
    await run.flush()
    settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_port=0
    )
    async with running(settings) as gw:
        gw.pool.idle_s = 0.02
        user, password = login_password(nats_server)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
            assert (await sign_in(http, user, password)).status_code == 303
            url = f"/api/w/{ws.name}/runs/{run.id}/live"
            async with http.stream("GET", url) as stream:
                lines = stream.aiter_lines()
                while "event: metrics" not in await anext(lines):
                    pass
                conn = gw.pool._entries[user].conn
                for _ in range(20):  # many reaper rounds, each past idle_s
                    await asyncio.sleep(0.05)
                    assert gw.pool._entries[user].conn is conn and conn.nc.is_connected
            for _ in range(400):  # the reaper forgets it, then closes it
                if user not in gw.pool._entries and conn.nc.is_closed:
                    break
                await asyncio.sleep(0.025)
            assert user not in gw.pool._entries and conn.nc.is_closed
    await run.complete()
