"""Administration: the people of the embedded server (``cairn user``) and the members of a
workspace (``cairn workspace``), on the machine of ``cairn up``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cairn.cli._base import cli, done, emit, json_option, run, settings
from cairn.proto.members import ROLE_NAMES

F = TypeVar("F", bound=Callable[..., Any])


def _role_option(help_text: str) -> Callable[[F], F]:
    option: Callable[[F], F] = click.option(
        "--role",
        "roles",
        multiple=True,
        required=True,
        type=click.Choice(ROLE_NAMES),
        help=help_text,
    )
    return option


# -- cairn user ---------------------------------------------------------------------------------


@cli.group()
def user() -> None:
    """The people who may connect to the embedded server of 'cairn up' (this home's).

    Each change is written to credentials.json and loaded by the running server at once (a
    config reload, no restart): a new user can connect, a removed one is disconnected. A user
    then needs to be made a member of a workspace: see 'cairn workspace add-member'.

    \b
    Example:
      cairn user add bea --role data_scientist
    """


@user.command("add")
@click.argument("name")
@_role_option("a role the server gives NAME (repeat the option for several)")
@json_option
def user_add(name: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Add the person NAME with their roles and print their new password, once.

    NAME is lower-case letters, digits, _ and - (at most 32, not starting with 'cairn').

    \b
    Example:
      cairn user add bea --role data_scientist --role compute_operator
    """
    from cairn.embedded._users import add_user

    home = settings().home_path
    password, loaded = add_user(home, name, roles)
    done(
        as_json,
        {"user": name, "roles": list(roles), "password": password, "loaded": loaded},
        f"user {name} added with roles {', '.join(roles)}",
        "the running server loaded it"
        if loaded
        else "no server runs over this home: the next 'cairn up' loads it",
        f"their password is shown this once; give {name} these two lines:",
        f"  export CAIRN_NATS_USER={name}",
        f"  export CAIRN_NATS_PASSWORD={password}",
        f"then make them a member: cairn workspace add-member WORKSPACE {name} --role ...",
    )


@user.command("remove")
@click.argument("name")
@json_option
def user_remove(name: str, as_json: bool) -> None:
    """Remove the person NAME and their API tokens: their password and tokens stop working
    and the running server closes their connections. Their workspace memberships stay in the
    log until removed ('cairn workspace remove-member'), and would apply again to a new user of
    the same name.

    \b
    Example:
      cairn user remove bea
    """
    from cairn.embedded._users import remove_user

    loaded = remove_user(settings().home_path, name)
    tail = "the running server disconnected them" if loaded else "no server runs over this home"
    done(as_json, {"user": name, "removed": True, "loaded": loaded}, f"user {name} removed; {tail}")


@user.command("list")
@json_option
def user_list(as_json: bool) -> None:
    """The people of this home's server and their roles (never a password)."""
    from cairn.embedded._users import list_users

    rows = list_users(settings().home_path)
    emit(rows, as_json, [("user", "USER"), ("roles", "ROLES"), ("local", "LOCAL")])


# -- cairn workspace ----------------------------------------------------------------------------


@cli.group()
def workspace() -> None:
    """Workspaces and their members: who may address one, with which roles there.

    A person's request in a workspace is refused unless they are its member with a role
    that allows it (the creator of a workspace is its first member). Adding and removing
    members takes the admin's credentials (admin.json in this home), so it is done on the
    machine of 'cairn up'.

    \b
    Example:
      cairn workspace create vision --description "image models"
      cairn workspace add-member default bea --role auditor
    """


@workspace.command("create")
@click.argument("name")
@click.option("--description", default="", help="what the workspace is for")
@click.option("--exist-ok", is_flag=True, help="an existing workspace NAME is not an error")
@json_option
def workspace_create(name: str, description: str, exist_ok: bool, as_json: bool) -> None:
    """Create workspace NAME; you become its first member, with your roles.

    \b
    Example:
      cairn workspace create vision --description "image models"
    """
    from cairn.sdk import connect as sdk_connect

    async def go() -> bool:
        async with sdk_connect(settings(), workspace=name) as ws:
            return await ws.create(description, exist_ok=exist_ok)

    made = run(go())
    said = f"workspace {name} {'created' if made else 'exists already'}"
    done(as_json, {"workspace": name, "created": made}, said)


@workspace.command("list")
@json_option
def workspace_list(as_json: bool) -> None:
    """The workspaces you are a member of, with your roles there.

    \b
    Example:
      cairn workspace list --json
    """
    from cairn.sdk import connect as sdk_connect

    async def go() -> Any:
        async with sdk_connect(settings()) as ws:
            return await ws.workspaces()

    rows = run(go())
    if not as_json:
        for row in rows:
            row["roles"] = ", ".join(row.get("roles", []))
    columns = [("name", "NAME"), ("roles", "ROLES"), ("created_by", "BY"), ("description", "ABOUT")]
    emit(rows, as_json, columns)


async def _as_admin(fn: Any) -> Any:
    from cairn.bus import connect
    from cairn.embedded._admin import admin_settings

    conn = await connect(admin_settings(settings()), name="cairn-admin-cli")
    try:
        return await fn(conn)
    finally:
        await conn.close()


def _known_user(name: str) -> None:
    """Refuse a user this home's server does not know (where it has a credentials file)."""
    import json

    from cairn.embedded._auth import check_person_name

    check_person_name(name)
    path = settings().home_path / "credentials.json"
    if path.is_file() and name not in json.loads(path.read_text()).get("people", {}):
        raise click.UsageError(
            f"this home's server has no user {name} ('cairn user add {name} --role ...' first)"
        )


@workspace.command("add-member")
@click.argument("name")
@click.argument("user_name", metavar="USER")
@_role_option("a role USER gets in workspace NAME (repeat the option for several)")
@json_option
def workspace_add_member(name: str, user_name: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Make USER a member of workspace NAME with these roles (a member already gets these
    roles instead of theirs). Their roles here count only as far as the server's roles for
    them allow ('cairn user list').

    \b
    Example:
      cairn workspace add-member default bea --role data_scientist
    """
    from cairn.embedded._admin import add_member

    _known_user(user_name)
    run(_as_admin(lambda conn: add_member(conn, name, user_name, roles)))
    said = f"{user_name} is a member of {name} with roles {', '.join(roles)}"
    done(as_json, {"workspace": name, "user": user_name, "roles": list(roles)}, said)


@workspace.command("remove-member")
@click.argument("name")
@click.argument("user_name", metavar="USER")
@json_option
def workspace_remove_member(name: str, user_name: str, as_json: bool) -> None:
    """USER is no longer a member of workspace NAME: their requests there are refused.

    \b
    Example:
      cairn workspace remove-member default bea
    """
    from cairn.embedded._admin import remove_member

    run(_as_admin(lambda conn: remove_member(conn, name, user_name)))
    said = f"{user_name} is no longer a member of {name}"
    done(as_json, {"workspace": name, "user": user_name, "roles": []}, said)


@workspace.command("members")
@click.argument("name")
@json_option
def workspace_members(name: str, as_json: bool) -> None:
    """The members of workspace NAME and their roles there. Asked as the admin where this
    home has its credentials, else as you (a member may ask).

    \b
    Example:
      cairn workspace members default
    """
    from cairn.bus import connect
    from cairn.embedded._admin import admin_settings
    from cairn.errors import CairnError
    from cairn.proto.members import ListMembers
    from cairn.rpc import Client

    base = settings()
    try:
        chosen = admin_settings(base)
    except CairnError:
        chosen = base

    async def go() -> Any:
        conn = await connect(chosen, name="cairn-workspace-members")
        try:
            return (await Client(conn, name).ask(ListMembers())).data
        finally:
            await conn.close()

    emit(run(go()), as_json, [("user", "USER"), ("roles", "ROLES")])


# -- cairn role ---------------------------------------------------------------------------------


@cli.group()
def role() -> None:
    """Grant and revoke a member's roles in a workspace, as the admin (recorded as membership
    events, as 'cairn workspace add-member' is).

    \b
    Example:
      cairn role grant bea auditor --workspace default
    """


async def _members_of(conn: Any, workspace: str) -> dict[str, list[str]]:
    from cairn.proto.members import ListMembers
    from cairn.rpc import Client

    rows = (await Client(conn, workspace).ask(ListMembers())).data
    return {r["user"]: list(r["roles"]) for r in rows}


@role.command("grant")
@click.argument("user_name", metavar="USER")
@click.argument("role_name", metavar="ROLE", type=click.Choice(ROLE_NAMES))
@click.option("--workspace", "ws", required=True, help="the workspace the role is granted in")
@json_option
def role_grant(user_name: str, role_name: str, ws: str, as_json: bool) -> None:
    """Give USER the role ROLE in a workspace (making them a member when they are not).

    \b
    Example:
      cairn role grant bea auditor --workspace default
    """
    from cairn.embedded._admin import add_member

    _known_user(user_name)

    async def go(conn: Any) -> list[str]:
        roles = sorted({*(await _members_of(conn, ws)).get(user_name, []), role_name})
        await add_member(conn, ws, user_name, roles)
        return roles

    roles = run(_as_admin(go))
    said = f"{user_name} has roles {', '.join(roles)} in {ws}"
    done(as_json, {"workspace": ws, "user": user_name, "roles": roles}, said)


@role.command("revoke")
@click.argument("user_name", metavar="USER")
@click.argument("role_name", metavar="ROLE", type=click.Choice(ROLE_NAMES))
@click.option("--workspace", "ws", required=True, help="the workspace the role is taken from")
@json_option
def role_revoke(user_name: str, role_name: str, ws: str, as_json: bool) -> None:
    """Take ROLE from USER in a workspace; with no role left they are no longer a member.

    \b
    Example:
      cairn role revoke bea auditor --workspace default
    """
    from cairn.embedded._admin import add_member, remove_member

    async def go(conn: Any) -> list[str]:
        held = (await _members_of(conn, ws)).get(user_name)
        if held is None:
            raise click.UsageError(f"{user_name} is not a member of {ws}")
        roles = sorted(set(held) - {role_name})
        if roles:
            await add_member(conn, ws, user_name, roles)
        else:
            await remove_member(conn, ws, user_name)
        return roles

    roles = run(_as_admin(go))
    left = f"roles {', '.join(roles)}" if roles else "no role: no longer a member"
    done(
        as_json,
        {"workspace": ws, "user": user_name, "roles": roles},
        f"{user_name} has {left} in {ws}",
    )
