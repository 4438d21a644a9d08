"""Workspace secrets (``cairn secret``) and the workspace key's rotation
(``cairn workspace rotate-key``).

A value is never taken from the command line by default: an argument is visible to every user
of the machine while the command runs (``ps``, ``/proc/<pid>/cmdline``) and stays in the
shell's history. ``cairn secret set`` reads it from stdin (a hidden prompt on a terminal) or
from ``--value-file``; ``--value`` exists for throwaway values and warns.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, done, emit, json_option, run, settings, show, with_workspace

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

_COLUMNS = [
    ("name", "NAME"),
    ("version", "VERSION"),
    ("updated_at", "UPDATED"),
    ("updated_by", "BY"),
    ("reads", "READS"),
    ("last_read_at", "LAST READ"),
]
ARGV_WARNING = (
    "warning: a value given with --value is visible to other users of this machine while the"
    " command runs (ps) and stays in your shell history; prefer stdin or --value-file"
)


@cli.group()
def secret() -> None:
    """Workspace secrets (Azure ML's Keyvault): set, list, show, delete.

    Values are sealed with the workspace key before they are stored; every read (cairn secret
    show, run.get_secret in a job) is recorded with who read which version, never the value.
    Names are 1-127 letters, digits and '-'; values at most 25 KiB.

    \b
    Examples:
      cairn secret set db-password --value-file ./password.txt
      printf %s "$TOKEN" | cairn secret set api-token
      cairn secret list
    """


def _read_value(value_file: str | None, value: str | None) -> str:
    if value is not None and value_file is not None:
        raise click.UsageError("give --value or --value-file, not both")
    if value is not None:
        click.echo(ARGV_WARNING, err=True)
        return value
    if value_file is not None:
        with click.open_file(value_file, "r", encoding="utf-8") as f:
            text: str = f.read()
        return text
    if sys.stdin.isatty():
        prompted: str = click.prompt(
            "value", hide_input=True, confirmation_prompt=True, prompt_suffix=": "
        )
        return prompted
    piped = sys.stdin.read()
    return piped[:-2] if piped.endswith("\r\n") else piped.removesuffix("\n")


@secret.command("set")
@click.argument("name")
@click.option(
    "--value-file",
    default=None,
    help="read the value from this file, exactly as it is ('-' is stdin)",
)
@click.option(
    "--value",
    default=None,
    help="the value itself; discouraged: other users see it in the process list, and it stays"
    " in the shell history (a warning says so)",
)
@json_option
def secret_set(name: str, value_file: str | None, value: str | None, as_json: bool) -> None:
    """Set secret NAME (a new version).

    The value comes from stdin (one trailing newline removed, as echo adds one; a hidden prompt
    on a terminal), or from --value-file exactly as the file holds it. It is not taken from the
    command line unless --value says so, because arguments are visible to every user of the
    machine and stay in the shell's history.

    \b
    Examples:
      cairn secret set db-password --value-file ./password.txt
      printf %s "$TOKEN" | cairn secret set api-token
    """
    text = _read_value(value_file, value)

    async def go(ws: AsyncWorkspace) -> int:
        await ws.secrets.set(name, text)
        rows = [s for s in await ws.secrets.list() if s["name"] == name]
        return int(rows[0]["version"]) if rows else 0

    version = run(with_workspace(go))
    done(as_json, {"name": name, "version": version}, f"secret {name} set (version {version})")


@secret.command("list")
@json_option
def secret_list(as_json: bool) -> None:
    """The workspace's secrets: names, versions, who set them when, how often they were read.
    Never a value. Auditors may list; compute operators may not.

    \b
    Example:
      cairn secret list --json
    """

    async def go(ws: AsyncWorkspace) -> list[dict[str, Any]]:
        return await ws.secrets.list()

    emit(run(with_workspace(go)), as_json, _COLUMNS)


@secret.command("show")
@click.argument("name")
@json_option
def secret_show(name: str, as_json: bool) -> None:
    """Print the value of secret NAME (alone, for scripts); the read is recorded.

    \b
    Example:
      export DB_PASSWORD="$(cairn secret show db-password)"
    """

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        return await ws.secrets.read(name)

    got = run(with_workspace(go))
    if as_json:
        show(got, True)
    else:
        click.echo(got["value"])


@secret.command("delete")
@click.argument("name")
@json_option
def secret_delete(name: str, as_json: bool) -> None:
    """Delete secret NAME (setting it again starts a new version; its values stay unreadable
    once the workspace key is rotated).

    \b
    Example:
      cairn secret delete db-password
    """

    async def go(ws: AsyncWorkspace) -> None:
        await ws.secrets.delete(name)

    run(with_workspace(go))
    done(as_json, {"name": name, "deleted": True}, f"secret {name} deleted")


@click.group("workspace")
def workspace() -> None:
    """Workspaces: the workspace key (rotate-key).

    \b
    Example:
      cairn workspace rotate-key default
    """


def add_rotate_key() -> None:
    """Put ``rotate-key`` into ``cairn workspace``: the group another module made, else this
    module's own (called once every module has registered its commands)."""
    group = cli.commands.get("workspace")
    if not isinstance(group, click.Group):
        group = workspace
        cli.add_command(group)
    group.add_command(rotate_key)


@click.command("rotate-key")
@click.argument("ws")
@click.option(
    "--keep-old-keys",
    is_flag=True,
    help="keep the old keys after re-sealing (copies elsewhere still open old tokens)",
)
@json_option
def rotate_key(ws: str, keep_old_keys: bool, as_json: bool) -> None:
    """Rotate the key of workspace WS.

    A new key becomes current, every secret and datastore credential of WS is sealed again
    under it (each by an event in the log), then the old keys are deleted. Machines that hold
    a copy of the workspace's keys (agents elsewhere, keys_dir) need the new keyring file.

    \b
    Example:
      cairn workspace rotate-key default
    """
    from cairn.sdk import connect

    async def go() -> None:
        async with connect(settings(), workspace=ws) as core:
            await core.secrets.rotate_key(keep_old_keys=keep_old_keys)

    run(go())
    kept = " (old keys kept)" if keep_old_keys else ""
    said = f"workspace {ws}: new key current, secrets and credentials re-sealed{kept}"
    done(as_json, {"workspace": ws, "rotated": True, "old_keys_kept": keep_old_keys}, said)
