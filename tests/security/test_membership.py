"""Workspace membership is data in the log, checked by the services on every person's command
and query: not a member, refused; added by the admin, let through; removed, refused again. A
member's roles in the workspace decide what they may send there."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog

from cairn.bus import Connection, EventStore
from cairn.embedded import NatsServer
from cairn.embedded._admin import add_member, adopt_memberless, remove_member
from cairn.errors import CairnError, InvalidInput, NotFound, PermissionDenied, Unavailable
from cairn.members import Membership, roles_allow
from cairn.proto import subjects
from cairn.proto.commands import CreateExperiment, CreateWorkspace, ListExperiments
from cairn.proto.events import MemberAdded
from cairn.proto.members import AddMember, ListMembers
from cairn.rpc import ADMIN_ACTOR, Client, Request
from cairn.settings import Settings
from tests.conftest import LEAKS_SOCKETS, own_server
from tests.helpers import envelope


def cid() -> str:
    return uuid.uuid4().hex


def experiment() -> CreateExperiment:
    return CreateExperiment(command_id=cid(), name="members")


async def refused(call: Callable[[], Awaitable[object]], within_s: float = 3.0) -> str:
    """The ``PermissionDenied`` message ``call`` gets; a removal reaches every service's view
    within milliseconds, so a call is retried briefly until it is refused."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            await call()
        except PermissionDenied as exc:
            return exc.message
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("still let through")
        await asyncio.sleep(0.05)


async def test_a_person_is_refused_until_added_and_again_once_removed(
    client: Client, people: dict[str, Connection], admin_conn: Connection
) -> None:
    ws = client.workspace
    dana = Client(people["dana"], ws, attempts=1)
    for call in (lambda: dana.send(experiment()), lambda: dana.ask(ListExperiments())):
        message = await refused(call, within_s=0)
        assert "dana" in message and f"not a member of workspace {ws}" in message
    await add_member(admin_conn, ws, "dana", ["data_scientist"])
    await dana.send(experiment())  # at once: a refusal first catches up with the log
    await dana.ask(ListExperiments())
    await remove_member(admin_conn, ws, "dana")
    assert "not a member" in await refused(lambda: dana.send(experiment()))
    assert "not a member" in await refused(lambda: dana.ask(ListExperiments()))


async def test_a_forged_header_does_not_make_a_person_a_member(
    client: Client, client_settings: Settings, people: dict[str, Connection]
) -> None:
    """dana claims, in the headers a client may set, to be the workspace's creator (a member):
    the server's attested header wins, and dana is not a member."""
    forged = json.dumps({"acc": "USERS", "user": client_settings.nats_user})
    dana = Client(people["dana"], client.workspace, attempts=1)
    dana.headers = {"Nats-Request-Info": forged, "Cairn-Actor": client_settings.nats_user or ""}
    for call in (lambda: dana.send(experiment()), lambda: dana.ask(ListExperiments())):
        assert "dana is not a member" in await refused(call, within_s=0)


async def test_an_auditor_member_queries_but_does_not_command(
    client: Client, people: dict[str, Connection], admin_conn: Connection
) -> None:
    """dana is a data scientist to the server; an auditor in this workspace: the workspace's
    roles decide (the two gates together give the roles both allow)."""
    ws = client.workspace
    await add_member(admin_conn, ws, "dana", ["auditor"])
    dana = Client(people["dana"], ws, attempts=1)
    assert (await dana.ask(ListExperiments())).data == []
    message = await refused(lambda: dana.send(experiment()), within_s=0)
    assert f"dana's roles in workspace {ws} (auditor) do not allow experiment.create" in message
    await add_member(admin_conn, ws, "dana", ["data_scientist"])  # roles changed
    await dana.send(experiment())
    audrey = Client(people["audrey"], ws, attempts=1, timeout=1)  # an auditor to the server too
    await add_member(admin_conn, ws, "audrey", ["auditor"])
    await audrey.ask(ListExperiments())
    await refused(lambda: audrey.send(experiment()), within_s=0)


async def test_the_creator_is_the_first_member_and_the_admin_the_actor_of_changes(
    client: Client, client_settings: Settings, admin_conn: Connection, store: EventStore
) -> None:
    ws = client.workspace
    members = (await client.ask(ListMembers())).data
    assert members == [
        {"user": client_settings.nats_user, "roles": ["data_scientist", "compute_operator"]}
    ]
    await add_member(admin_conn, ws, "olga", ["compute_operator", "auditor", "compute_operator"])
    await add_member(admin_conn, ws, "olga", ["auditor", "compute_operator"])  # nothing new
    await remove_member(admin_conn, ws, client_settings.nats_user)
    history = await store.read(subjects.event(ws, "workspace", ws))
    assert [(r.envelope.type, r.envelope.actor) for r in history] == [
        ("WorkspaceCreated", client_settings.nats_user),
        ("MemberAdded", client_settings.nats_user),
        ("MemberAdded", ADMIN_ACTOR),
        ("MemberRemoved", ADMIN_ACTOR),
    ]
    admin = Client(admin_conn, ws)
    assert (await admin.ask(ListMembers())).data == [
        {"user": "olga", "roles": ["compute_operator", "auditor"]}
    ]
    with pytest.raises(NotFound, match="not a member"):
        await remove_member(admin_conn, ws, client_settings.nats_user)
    with pytest.raises(NotFound, match="does not exist"):
        await add_member(admin_conn, "nows" + cid()[:8], "olga", ["auditor"])
    with pytest.raises(InvalidInput):
        await add_member(admin_conn, ws, "olga", [])


async def test_people_and_services_cannot_send_membership_commands(
    client: Client, people: dict[str, Connection], conn: Connection, admin_conn: Connection
) -> None:
    """The server keeps the ``member`` family to the admin: a person (even a member, even a
    data scientist) and the services' own user are refused."""
    ws = client.workspace
    await add_member(admin_conn, ws, "olga", ["data_scientist", "compute_operator"])
    for c in (people["olga"], conn):
        sender = Client(c, ws, attempts=1, timeout=1)
        with pytest.raises(PermissionDenied):
            await sender.send(AddMember(command_id=cid(), user="olga", roles=["auditor"]))
    members = (await Client(admin_conn, ws).ask(ListMembers())).data
    assert {"user": "olga", "roles": ["data_scientist", "compute_operator"]} in members


async def test_a_workspace_is_created_by_anyone_but_not_entered_by_creating_it(
    services: None, people: dict[str, Connection], client: Client
) -> None:
    dana = Client(people["dana"], client.workspace, attempts=1)
    message = await refused(
        lambda: dana.send(CreateWorkspace(command_id=cid(), name=client.workspace)), within_s=0
    )
    assert "not a member" in message
    own = "t" + cid()[:12]
    mine = Client(people["dana"], own)
    await mine.send(CreateWorkspace(command_id=cid(), name=own))
    assert (await mine.ask(ListMembers())).data == [{"user": "dana", "roles": ["data_scientist"]}]
    await mine.send(experiment())


async def test_workspaces_without_members_are_adopted_by_the_local_person(
    services: None, conn: Connection, admin_conn: Connection, client_conn: Connection
) -> None:
    """The migration: a workspace that never had a member (from before membership; here one
    the services' own user made) gets the local person; one that had members does not, even
    when none is left."""
    old, governed = "old" + cid()[:10], "gov" + cid()[:10]
    for ws in (old, governed):
        await Client(conn, ws).send(CreateWorkspace(command_id=cid(), name=ws))
    await add_member(admin_conn, governed, "olga", ["auditor"])
    await remove_member(admin_conn, governed, "olga")
    local = client_conn.settings.nats_user
    assert local is not None
    adopted = await adopt_memberless(admin_conn, local, ["data_scientist", "compute_operator"])
    assert old in adopted and governed not in adopted
    assert old not in await adopt_memberless(admin_conn, local, ["auditor"])  # once only
    await Client(client_conn, old).send(experiment())
    with pytest.raises(PermissionDenied):
        await Client(client_conn, governed, attempts=1).send(experiment())


async def test_a_view_that_has_not_caught_up_refuses_people_but_not_the_stack(
    conn: Connection,
) -> None:
    view = Membership(conn)
    person = Request(workspace="w", verb="run.start", body=None, actor="dana")
    with pytest.raises(Unavailable):
        await view.admit(person)
    await view.admit(Request(workspace="w", verb="run.start", body=None, actor="cairn"))


def test_roles_allow_what_the_role_matrix_says() -> None:
    ds, co, aud = (frozenset([r]) for r in ("data_scientist", "compute_operator", "auditor"))
    assert roles_allow(ds, "job.submit", query=False)
    assert not roles_allow(ds, "job.report", query=False)
    assert not roles_allow(ds, "compute.create", query=False)
    assert roles_allow(co, "compute.create", query=False)
    assert not roles_allow(aud, "run.start", query=False)
    assert all(roles_allow(r, "run.list", query=True) for r in (ds, co, aud))
    assert not roles_allow(ds, "member.add", query=False)
    assert not roles_allow(ds, "workspace", query=False)


@pytest.mark.parametrize(
    "body",
    [
        {"user": "olga", "roles": ["admin"]},
        {"user": "olga", "roles": []},
        {"user": "ol.ga", "roles": ["auditor"]},
        {"user": "olga", "roles": ["auditor"], "workspace": "other"},
    ],
)
async def test_a_bad_membership_command_is_refused_by_name(
    client: Client, admin_conn: Connection, body: dict[str, object]
) -> None:
    payload = json.dumps({"type": "AddMember", "command_id": cid(), **body}).encode()
    subject = subjects.command(client.workspace, "member.add")
    reply = json.loads((await admin_conn.nc.request(subject, payload, timeout=5)).data)
    assert reply["type"] == "ErrorReply" and reply["code"] == "invalid_input", reply


async def test_a_view_whose_subscription_stopped_follows_the_log_again(
    client: Client, conn: Connection, admin_conn: Connection
) -> None:
    """A client subscription that stops (as one can after a server restart) is noticed by the
    watchdog, and the view follows the log again from where it was."""
    view = Membership(conn, stall_s=0.2)
    await view.start()
    try:
        await view._sub.unsubscribe()  # deliveries stop, silently for the view
        await add_member(admin_conn, client.workspace, "audrey", ["auditor"])
        for _ in range(100):
            if "audrey" in view.members.get(client.workspace, {}):
                break
            await asyncio.sleep(0.05)
        assert view.members[client.workspace]["audrey"] == frozenset({"auditor"})
    finally:
        await view.stop()


@LEAKS_SOCKETS
async def test_a_view_follows_the_log_again_after_a_server_restart(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    """While the server is away the view's attempts to follow again fail (it has no consumer
    then); once the server is back it follows the log from where it was, and no attempt
    reaches for a consumer it does not have."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=1.0)
    store = EventStore(conn)
    subject = subjects.event("rs", "workspace", "rs")
    view = Membership(conn, heartbeat_s=0.5, stall_s=0.2)
    try:
        with structlog.testing.capture_logs() as logs:
            await view.start()
            added = MemberAdded(user="dana", roles=["auditor"])
            await store.append(
                subject,
                [envelope("rs", "rs", added, kind="workspace")],
                expected_seq=0,
                msg_id="a",
            )
            await _until(lambda: "dana" in view.members.get("rs", {}))
            server.stop()
            # the view tries to follow again while the server is away (and fails)
            await _until(lambda: any(e["event"] == "members_resubscribing" for e in logs))
            await asyncio.sleep(4 * view.stall_s)  # and tries again, several times
            server = NatsServer(tmp_path / "home", port=server.port)
            await server.start()
            added = MemberAdded(user="erin", roles=["auditor"])
            for _ in range(100):  # the client reconnects on its own
                try:
                    await store.append(
                        subject,
                        [envelope("rs", "rs", added, kind="workspace")],
                        expected_seq=None,
                        msg_id="b",
                    )
                    break
                except CairnError:
                    await asyncio.sleep(0.2)
            await _until(lambda: "erin" in view.members.get("rs", {}))
        errors = [str(e.get("error")) for e in logs if "error" in e]
        assert not [e for e in errors if "NoneType" in e], errors
        assert any(e["event"] == "members_resubscribed" for e in logs)
    finally:
        await view.stop()
        await conn.close()
        server.stop()


async def _until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
