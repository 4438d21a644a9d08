"""``cairn user``: people added to and removed from the running embedded server by a config
reload, not a restart; a removed person's connection is closed and their password refused."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, connect
from cairn.embedded import NatsServer
from cairn.embedded._users import add_user, list_users, remove_user
from cairn.errors import CairnError, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from cairn.proto.commands import CreateExperiment, ListWorkspaces
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


async def test_workspaces_are_created_listed_and_roles_granted_from_the_cli(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    store: Any,
    people: dict[str, Connection],
    tmp_path: Path,
) -> None:
    """``cairn workspace create|list`` as a person (the creator is the first member), and
    ``cairn role grant|revoke`` as the admin, recorded as membership events."""
    from cairn.proto import subjects
    from cairn.proto.events import MemberAdded, MemberRemoved, MemberRolesChanged

    ws = "wsc" + uuid.uuid4().hex[:8]
    env = sdk_env(client_settings, ws, nats_server.home)
    made = await cli("workspace", "create", ws, "--description", "made here", env=env, cwd=tmp_path)
    assert f"workspace {ws} created" in made
    again = await cli("workspace", "create", ws, "--exist-ok", env=env, cwd=tmp_path)
    assert "exists already" in again
    code, _, said = await run_cli("workspace", "create", ws, env=env, cwd=tmp_path)
    assert code != 0 and "already" in said and "Traceback" not in said
    listed = json.loads(await cli("workspace", "list", "--json", env=env, cwd=tmp_path))
    mine = {row["name"]: row for row in listed}
    assert mine[ws]["roles"] == ["compute_operator", "data_scientist"]
    assert mine[ws]["description"] == "made here"

    first = await cli(
        "role", "grant", "dana", "auditor", "--workspace", ws, "--json", env=env, cwd=tmp_path
    )
    assert json.loads(first) == {"workspace": ws, "user": "dana", "roles": ["auditor"]}
    granted = await cli(
        "role", "grant", "dana", "data_scientist", "--workspace", ws, env=env, cwd=tmp_path
    )
    assert "dana has roles auditor, data_scientist" in granted
    revoked = await cli(
        "role", "revoke", "dana", "auditor", "--workspace", ws, env=env, cwd=tmp_path
    )
    assert "dana has roles data_scientist" in revoked
    gone = await cli(
        "role", "revoke", "dana", "data_scientist", "--workspace", ws, env=env, cwd=tmp_path
    )
    assert "no longer a member" in gone
    # anyone may ask, from any workspace, and hears of their own workspaces alone
    theirs = (await Client(people["dana"], ws).ask(ListWorkspaces())).data
    assert ws not in {row["name"] for row in theirs}
    events = [r.envelope for r in await store.read(subjects.event(ws, "workspace", ws))]
    dana = [e for e in events if getattr(e.data, "user", None) == "dana"]
    assert [type(e.data) for e in dana] == [
        MemberAdded,
        MemberRolesChanged,
        MemberRolesChanged,
        MemberRemoved,
    ]
    assert {e.actor for e in dana} == {"cairn-admin"}


async def test_workspace_create_and_list_in_the_sdk(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    """Azure's names: ``Workspace.create`` (Azure's resource arguments named in a warning,
    anything else refused) and ``Workspace.list``."""
    from tests.sdk.test_sync_sdk import run_script

    name = "wss" + uuid.uuid4().hex[:8]
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("workspaces_script.py", name, env=env, cwd=tmp_path)
    assert got["warned"] == [
        "Workspace.create: resource_group, subscription_id name Azure resources; a Cairn"
        " workspace has none of them, so they are not used"
    ]
    assert got["name"] == got["exist_ok"] == name and got["again"] == "already_exists"
    assert "friendlyname" in got["unknown"]
    assert got["listed"] == [name]
