"""The admin's connection (``admin.json``) and what it is used for: a workspace's members
(``cairn workspace add-member``...) and ``cairn up``'s migration of workspaces that never had a
member.

The membership commands travel on ``cairn.cmd.<ws>.member.*``, which the server lets the
admin user alone publish; the services record them with the admin as their actor
(docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import msgspec

from cairn.bus import Connection
from cairn.embedded._auth import ADMIN_USER
from cairn.errors import CairnError
from cairn.proto.members import AddMember, AdoptWorkspace, RemoveMember, canonical_roles
from cairn.proto.streams import EVENTS
from cairn.rpc import Client
from cairn.sdk._session import new_id
from cairn.settings import Settings

__all__ = ["add_member", "admin_settings", "adopt_memberless", "remove_member"]


def admin_settings(settings: Settings) -> Settings:
    """``settings`` with the admin's user and password, from ``<home>/admin.json``."""
    path = settings.home_path / "admin.json"
    try:
        password = str(json.loads(path.read_text())["password"])
    except (OSError, ValueError, KeyError) as exc:
        raise CairnError(
            f"the admin's credentials ({path}) cannot be read: membership is managed on the"
            " machine of 'cairn up', by the user who runs it"
        ) from exc
    return msgspec.structs.replace(
        settings, nats_user=ADMIN_USER, nats_password=password, nats_creds=None
    )


async def add_member(conn: Connection, workspace: str, user: str, roles: Iterable[str]) -> int:
    """Make ``user`` a member of ``workspace`` with ``roles`` (the stream sequence of the
    event, or of the last one when nothing changed)."""
    cmd = AddMember(command_id=new_id(), user=user, roles=canonical_roles(roles))
    return (await Client(conn, workspace).send(cmd)).seq


async def remove_member(conn: Connection, workspace: str, user: str) -> int:
    cmd = RemoveMember(command_id=new_id(), user=user)
    return (await Client(conn, workspace).send(cmd)).seq


async def adopt_memberless(conn: Connection, user: str, roles: Iterable[str]) -> list[str]:
    """The migration ``cairn up`` runs as the admin: ``user`` becomes a member with ``roles``
    of every workspace that never had a member (one from before membership existed, which the
    local person could use with every workspace then). A workspace that had members is left
    as it is, whoever they are now. Returns the workspaces adopted."""
    info = await conn.js.stream_info(EVENTS.name, subjects_filter="cairn.ev.*.workspace.*")
    wanted = canonical_roles(roles)
    adopted = []
    for subject in sorted(info.state.subjects or {}):
        ws = subject.split(".")[2]
        last = (await conn.js.get_last_msg(EVENTS.name, subject)).seq or 0
        done = await Client(conn, ws).send(
            AdoptWorkspace(command_id=new_id(), user=user, roles=wanted)
        )
        if done.seq > last:  # an event was appended: the workspace had never had a member
            adopted.append(ws)
    return adopted
