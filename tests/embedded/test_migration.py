"""A home from before workspace membership: ``cairn up`` makes its local person a member of
the workspaces that never had one, as the admin, so the person works there as before."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

from cairn.bus import AggregateCache, CommandContext, EventStore, connect, execute, provision
from cairn.domain import workspace
from cairn.embedded import NatsServer
from cairn.embedded._admin import admin_settings, remove_member
from cairn.proto import subjects
from cairn.proto.commands import CreateExperiment, CreateWorkspace
from cairn.proto.members import ListMembers
from cairn.rpc import ADMIN_ACTOR, Client
from cairn.settings import load_settings
from tests.conftest import settings_for
from tests.embedded.test_up import Up


def cid() -> str:
    return uuid.uuid4().hex


async def _old_history(home: Path, port: int) -> None:
    """Workspaces as the stack recorded them before membership: created, no member."""
    server = NatsServer(home, port=port)
    await server.start()
    try:
        conn = await connect(settings_for(server, service=True))
        await provision(conn)
        cache = AggregateCache(EventStore(conn))
        for ws in ("default", "old"):  # as the tracking service appended them then
            ctx = CommandContext(workspace=ws, command_id=cid(), actor="olduser")
            create = CreateWorkspace(command_id=ctx.command_id, name=ws)
            await execute(ctx, workspace.AGGREGATE, ws, create, cache=cache)
        await conn.close()
    finally:
        server.stop()


def test_up_adopts_the_workspaces_of_an_older_home(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    asyncio.run(_old_history(home, port))
    up = Up(home, port)
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=20)

    async def check() -> None:
        person = load_settings(env={"CAIRN_HOME": str(home)})
        conn = await connect(person)
        try:
            for ws in ("default", "old"):
                await Client(conn, ws).send(CreateExperiment(command_id=cid(), name="e"))
            members = (await Client(conn, "default").ask(ListMembers())).data
            assert members == [
                {"user": person.nats_user, "roles": ["data_scientist", "compute_operator"]}
            ]
            made = "new" + cid()[:8]  # one the person creates: theirs; another's: not
            await Client(conn, made).send(CreateWorkspace(command_id=cid(), name=made))
            await Client(conn, made).send(CreateExperiment(command_id=cid(), name="e"))
        finally:
            await conn.close()
        password = json.loads((home / "credentials.json").read_text())["service_password"]
        service = await connect(
            load_settings(
                env={"CAIRN_HOME": str(home)}, nats_user="cairn-service", nats_password=password
            )
        )
        try:
            history = await EventStore(service).read(subjects.event("old", "workspace", "old"))
            assert [(r.envelope.type, r.envelope.actor) for r in history] == [
                ("WorkspaceCreated", "olduser"),
                ("MemberAdded", ADMIN_ACTOR),
            ]
        finally:
            await service.close()
        admin = await connect(admin_settings(person))
        try:  # the admin takes the local person out of the default workspace
            assert person.nats_user is not None
            await remove_member(admin, "default", person.nats_user)
        finally:
            await admin.close()

    asyncio.run(check())
    assert up.interrupt() == 0
    again = Up(home, port)  # says so, and does not stop over it
    ups.append(again.proc)
    again.wait_for("is not a member of workspace default", timeout=20)
    again.wait_for("cairn is up", timeout=10)
    again.wait_for("press Ctrl-C", timeout=10)
    assert again.interrupt() == 0
