"""API tokens through the gateway: a token acts as its person, in their workspaces only and
with their roles; a revoked token is refused at once; the gateway holds no credentials of its
own and acts as each caller, never as anyone more."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Request, post
from litestar.params import FromPath, JSONBody

from cairn.bus import Connection, connect
from cairn.embedded._server import NatsServer
from cairn.embedded._users import add_user, create_token, list_tokens, remove_user, revoke_token
from cairn.errors import InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.commands import CreateExperiment, ListWorkspaces
from cairn.rpc import Client
from cairn.services.gateway import Gateway
from cairn.services.gateway._app import send
from cairn.settings import Settings
from cairn.tokens import parse_token
from tests.conftest import add_people
from tests.gateway.conftest import login_password, sign_in
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli


@post("/test/w/{workspace:str}/experiments")
async def create_experiment(
    request: Request[Any, Any, Any], workspace: FromPath[str], data: JSONBody[dict[str, str]]
) -> dict[str, int]:
    """A command sent as the caller (the studio's forms and the JSON API do the same)."""
    command = CreateExperiment(command_id=uuid.uuid4().hex, name=data["name"])
    return {"seq": (await send(request, workspace, command)).seq}


@pytest.fixture
async def commands_gateway(gateway: Gateway) -> AsyncIterator[Gateway]:
    """A second gateway with a route that sends a command, over the same server."""
    gw = Gateway(gateway.settings, [create_experiment])
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    yield gw
    stop.set()
    await task


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_token(server: NatsServer, person: str | None = None) -> tuple[dict[str, Any], str]:
    row, token, loaded = create_token(server.home, person, "test")
    assert loaded, "the running server loads a new token"
    return row, token


async def wait_disconnected(conn: Connection) -> None:
    for _ in range(200):
        if not conn.nc.is_connected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server did not close the connection")


def refused(reply: httpx.Response) -> None:
    assert reply.status_code == 401, reply.text
    body = reply.json()
    assert body["code"] == "unauthenticated" and "Traceback" not in reply.text


async def test_a_token_reads_as_its_person_until_revoked(
    gateway: Gateway, nats_server: NatsServer, client: Client
) -> None:
    ws = client.workspace
    row, token = make_token(nats_server)
    person = login_password(nats_server)[0]
    assert row["user"] == person and token not in json.dumps(list_tokens(nats_server.home))
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer(token)) as http:
        page = await http.get(f"/w/{ws}/experiments")
        assert page.status_code == 200, page.text
        # the person is who is shown, and their own workspaces (ListWorkspaces' "mine")
        assert person in page.text and f"{person}~" not in page.text
        assert f"/w/{ws}/experiments" in page.text
        user, _ = parse_token(token)
        pooled = gateway.pool._entries[user].conn

        _, loaded = revoke_token(nats_server.home, row["id"])
        assert loaded
        await wait_disconnected(pooled)  # the server closed it on the reload
        refused(await http.get(f"/w/{ws}/experiments"))
        assert user not in gateway.pool._entries  # the pool let go of it
        refused(await http.get(f"/w/{ws}/experiments"))


async def test_unknown_and_malformed_tokens_are_refused(
    gateway: Gateway, nats_server: NatsServer, client: Client
) -> None:
    row, token = make_token(nats_server)
    user, _ = parse_token(token)
    unknown = "cairn_" + base64.urlsafe_b64encode(b"nobody~0123456789ab").decode().rstrip("=")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        good = await http.get(f"/w/{client.workspace}/experiments", headers=bearer(token))
        assert good.status_code == 200
        pooled = gateway.pool._entries[user].conn
        for header in [
            "Bearer garbage",
            "Bearer cairn_",
            "Bearer cairn_%%%.x",
            "Bearer " + "cairn_x." + "y" * 600,
            f"Bearer {unknown}.secret",
            f"Bearer {token}x",  # a wrong secret of a token that exists
            f"Basic {token}",
            "Bearer",
        ]:
            reply = await http.get(
                f"/w/{client.workspace}/experiments", headers={"authorization": header}
            )
            refused(reply)
        # a wrong secret for the token's user did not cost the token its connection
        assert gateway.pool._entries[user].conn is pooled and pooled.nc.is_connected
        assert (await http.get("/metrics", headers=bearer(token))).status_code == 200
    revoke_token(nats_server.home, row["id"])


async def test_the_recorded_actor_of_a_tokens_command_is_its_person(
    commands_gateway: Gateway, nats_server: NatsServer, client: Client, store: Any
) -> None:
    ws = client.workspace
    row, token = make_token(nats_server)
    async with httpx.AsyncClient(base_url=commands_gateway.url, headers=bearer(token)) as http:
        made = await http.post(f"/test/w/{ws}/experiments", json={"name": "via token"})
        assert made.status_code == 201, made.text
    eid = subjects.name_to_id("via token")
    events = [r.envelope for r in await store.read(subjects.event(ws, "experiment", eid))]
    assert [e.actor for e in events] == [row["user"]]
    revoke_token(nats_server.home, row["id"])


async def test_a_token_acts_only_where_its_person_is_a_member_with_their_roles(
    commands_gateway: Gateway,
    nats_server: NatsServer,
    client: Client,
    admin_conn: Connection,
) -> None:
    ws = client.workspace
    dana, dana_token = make_token(nats_server, "dana")  # a data scientist, not a member
    audrey, audrey_token = make_token(nats_server, "audrey")
    await add_people(admin_conn, ws, "audrey")  # an auditor here
    # a command the server refuses is PermissionDenied once the request times out
    async with httpx.AsyncClient(base_url=commands_gateway.url, timeout=30) as http:
        page = await http.get(f"/w/{ws}/experiments", headers=bearer(dana_token))
        assert page.status_code == 403 and page.json()["code"] == "permission_denied"
        sent = await http.post(
            f"/test/w/{ws}/experiments", json={"name": "not mine"}, headers=bearer(dana_token)
        )
        assert sent.status_code == 403, sent.text

        read = await http.get(f"/w/{ws}/experiments", headers=bearer(audrey_token))
        assert read.status_code == 200, read.text
        sent = await http.post(
            f"/test/w/{ws}/experiments", json={"name": "audited"}, headers=bearer(audrey_token)
        )
        assert sent.status_code == 403 and sent.json()["code"] == "permission_denied"
    for row in (dana, audrey):
        revoke_token(nats_server.home, row["id"])


async def test_a_person_signed_in_reads_no_workspace_they_are_not_a_member_of(
    gateway: Gateway, nats_server: NatsServer, client: Client
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await sign_in(http, *login_password(nats_server, "dana"))).status_code == 303
        page = await http.get(f"/w/{client.workspace}/experiments")
        assert page.status_code == 403, page.text
        html = await http.get(f"/w/{client.workspace}/experiments", headers={"accept": "text/html"})
        assert html.status_code == 403 and "not a member" in html.text


async def test_the_gateway_holds_no_credentials(
    gateway: Gateway, client_settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> None:
    for settings in (gateway.settings, gateway.pool.settings):
        assert (settings.nats_user, settings.nats_password, settings.nats_creds) == (None,) * 3
    with pytest.raises(InvalidInput, match="holds no NATS credentials"):
        Gateway(msgspec.structs.replace(gateway.settings, nats_user="dana", nats_password="x"))
    creds = tmp_path / "service.json"
    creds.write_text(json.dumps({"user": "cairn-service", "password": "x"}))
    env = sdk_env(client_settings, "default", nats_server.home)
    code, _, err = await run_cli("serve", "gateway", "--creds", str(creds), env=env, cwd=tmp_path)
    assert code != 0 and "never its own" in err


async def test_tokens_from_the_cli_and_a_removed_persons_tokens(
    client: Client, client_settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> None:
    """``cairn token create|list|revoke``; a token connects with its own inbox and its person's
    workspaces; a removed person's tokens go with them."""
    env = sdk_env(client_settings, client.workspace, nats_server.home)
    made = json.loads(await cli("token", "create", "--name", "ci", "--json", env=env, cwd=tmp_path))
    assert made["loaded"] and made["name"] == "ci" and made["user"] == client_settings.nats_user
    listed = await cli("token", "list", "--json", env=env, cwd=tmp_path)
    assert made["token"] not in listed and parse_token(made["token"])[1] not in listed
    assert {k: made[k] for k in ("id", "user", "name", "created")} in json.loads(listed)

    user, secret = parse_token(made["token"])
    as_token = msgspec.structs.replace(client_settings, nats_user=user, nats_password=secret)
    conn = await connect(as_token)
    try:
        mine = (await Client(conn, client.workspace).ask(ListWorkspaces())).data
        assert client.workspace in {w["name"] for w in mine}
        out = await cli("token", "revoke", made["id"], env=env, cwd=tmp_path)
        assert "closed its connections" in out
        await wait_disconnected(conn)
    finally:
        await conn.close()
    code, _, err = await run_cli("token", "revoke", made["id"], env=env, cwd=tmp_path)
    assert code == 1 and "no token" in err and "Traceback" not in err

    add_user(nats_server.home, "tokbea", ["auditor"])
    row, _ = make_token(nats_server, "tokbea")
    assert [r["id"] for r in list_tokens(nats_server.home, "tokbea")] == [row["id"]]
    remove_user(nats_server.home, "tokbea")
    assert row["id"] not in {r["id"] for r in list_tokens(nats_server.home)}
    accounts = (nats_server.home / "nats" / "accounts.conf").read_text()
    assert f"tokbea~{row['id']}" not in accounts
    with pytest.raises(NotFound):
        list_tokens(nats_server.home, "tokbea")
