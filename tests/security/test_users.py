"""``cairn user``: people added to and removed from the running embedded server by a config
reload, not a restart; a removed person's connection is closed and their password refused."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection, connect
from cairn.embedded import NatsServer
from cairn.embedded._users import add_user, list_users, remove_user
from cairn.errors import CairnError, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from cairn.proto.commands import CreateExperiment
from cairn.rpc import Client
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli


def cid() -> str:
    return uuid.uuid4().hex


def experiment() -> CreateExperiment:
    return CreateExperiment(command_id=cid(), name="users")


async def test_a_user_is_added_and_removed_while_the_server_runs(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    client_conn: Connection,
    tmp_path: Path,
) -> None:
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    ws = client.workspace
    env = sdk_env(client_settings, ws, nats_server.home)
    out = await cli("user", "add", "newbie", "--role", "data_scientist", env=env, cwd=tmp_path)
    assert "the running server loaded it" in out and "export CAIRN_NATS_USER=newbie" in out
    found = re.search(r"export CAIRN_NATS_PASSWORD=(\S+)", out)
    assert found is not None
    password = found.group(1)
    listed = await cli("user", "list", "--json", env=env, cwd=tmp_path)
    assert password not in listed and "password" not in listed
    assert {"user": "newbie", "roles": ["data_scientist"], "local": False} in json.loads(listed)

    newbie = msgspec.structs.replace(
        client_settings, nats_user="newbie", nats_password=password, request_timeout=2.0
    )
    conn = await connect(newbie)
    try:
        mine = Client(conn, ws, attempts=1)
        with pytest.raises(PermissionDenied, match="not a member"):
            await mine.send(experiment())
        add = ["workspace", "add-member", ws, "newbie", "--role", "data_scientist"]
        added = await cli(*add, env=env, cwd=tmp_path)
        assert f"newbie is a member of {ws}" in added
        await mine.send(experiment())
        members = json.loads(await cli("workspace", "members", ws, "--json", env=env, cwd=tmp_path))
        assert {"user": "newbie", "roles": ["data_scientist"]} in members

        out = await cli("user", "remove", "newbie", env=env, cwd=tmp_path)
        assert "disconnected them" in out
        for _ in range(100):
            if not conn.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not conn.nc.is_connected
        with pytest.raises(Unauthenticated):
            await connect(msgspec.structs.replace(newbie, connect_timeout_s=2.0))
    finally:
        await conn.close()
    # no restart: the same process, and everyone else's connections carry on
    assert nats_server.proc.pid == pid and nats_server.proc.poll() is None
    await client.send(experiment())


async def test_the_cli_refuses_what_it_cannot_do(
    client_settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, "default", nats_server.home)
    for args, says in [
        (["user", "add", "Bad.Name", "--role", "auditor"], "user name"),
        (["user", "add", "olga", "--role", "auditor"], "olga is a user already"),
        (["user", "remove", "nobody"], "no person"),
        (["user", "remove", client_settings.nats_user or ""], "local person"),
        (["workspace", "add-member", "default", "nobody", "--role", "auditor"], "no user nobody"),
    ]:
        code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
        assert code != 0 and says in err, (args, err)
    elsewhere = sdk_env(client_settings, "default", tmp_path / "empty")
    code, _, err = await run_cli(
        "workspace", "remove-member", "default", "olga", env=elsewhere, cwd=tmp_path
    )
    assert code == 1 and "admin's credentials" in err


def test_users_of_a_home_without_a_running_server(tmp_path: Path) -> None:
    NatsServer(tmp_path, port=0)
    password, loaded = add_user(tmp_path, "bea", ["auditor", "data_scientist"])
    assert not loaded and password
    assert {"user": "bea", "roles": ["data_scientist", "auditor"], "local": False} in list_users(
        tmp_path
    )
    assert password in (tmp_path / "nats" / "accounts.conf").read_text()
    assert "bea" in json.loads((tmp_path / "roles.json").read_text())["auditors"]
    with pytest.raises(InvalidInput):
        add_user(tmp_path, "bea", ["auditor"])
    assert remove_user(tmp_path, "bea") is False
    assert "bea" not in (tmp_path / "nats" / "accounts.conf").read_text()
    with pytest.raises(NotFound):
        remove_user(tmp_path, "bea")
    with pytest.raises(CairnError, match="no embedded server"):
        list_users(tmp_path / "elsewhere")
