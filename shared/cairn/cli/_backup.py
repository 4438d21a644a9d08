"""Whole-store backups: ``cairn backup DIR`` and ``cairn restore DIR`` (cairn.backup), as the
admin, the only user that may snapshot, restore or delete a stream."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import msgspec

from cairn.cli._base import cli, done, emit, run, settings
from cairn.settings import Settings

_CREDS_HELP = (
    'a JSON file with the admin\'s "user" and "password" (default: this home\'s admin.json;'
    " give it for a server that is not this home's, such as a cluster)"
)


def _say(as_json: bool) -> Any:
    return (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))


def _startable(home: Path, fresh_ok: bool) -> bool:
    """Whether the home's own server may be started for the command: a home ``cairn up``
    made (it has a server config), or, for a restore, a home that does not exist yet or is
    empty (never a client's home whose settings name a server elsewhere)."""
    if (home / "nats" / "nats.conf").is_file():
        return True
    return fresh_ok and (not home.exists() or not any(home.iterdir()))


@contextlib.asynccontextmanager
async def _admin(
    loaded: Settings, creds: Path | None, say: Any, *, fresh_ok: bool = False
) -> AsyncIterator[Any]:
    """A connection as the admin to the server of the settings; with no ``creds`` and no
    server running over this home, this home's server is started for the command (its
    services stay stopped) and stopped after it."""
    from cairn.bus import connect
    from cairn.cli._stack import _read_creds, home_server_alone
    from cairn.embedded._admin import admin_settings
    from cairn.embedded._auth import ADMIN_USER

    async with contextlib.AsyncExitStack() as stack:
        if creds is not None:
            user, password = _read_creds(creds)
            chosen = msgspec.structs.replace(
                loaded, nats_user=user, nats_password=password, nats_creds=None
            )
        else:
            home = loaded.home_path
            if not _startable(home, fresh_ok):
                raise click.ClickException(
                    f"{home} holds no server of its own: for a server elsewhere give the"
                    " admin's credentials (--creds) and its address (CAIRN_NATS_URL)"
                )
            server = await stack.enter_async_context(home_server_alone(home, say, "command"))
            if server is None:
                chosen = admin_settings(loaded)
            else:
                chosen = server.settings_as(loaded, ADMIN_USER)
        conn = await connect(chosen, name="cairn-backup")
        stack.push_async_callback(conn.close)
        yield conn


@cli.command("backup")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_CREDS_HELP,
)
@click.option(
    "--no-read-models",
    "skip_models",
    is_flag=True,
    help="do not record the read models' content hashes (faster on a large log;"
    " 'cairn restore --verify' then has nothing to compare)",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def backup_command(folder: Path, creds: Path | None, skip_models: bool, as_json: bool) -> None:
    """Back up the whole store into DIR (new or empty): a JetStream snapshot of METRICS,
    LOGS, every key-value bucket and EVENTS (last), each at one recorded position, the
    artifact store's index (and, for the local store, its blobs), the read models' content
    hashes at those positions, and manifest.json with the checksums (written last).

    It runs while the stack runs (writes go on; each stream is taken where it stood when its
    snapshot began) and connects as the admin (admin.json). With no server over this home,
    it starts the home's server alone for the backup.

    \b
    Example:
      cairn backup /backups/cairn-2026-11-30
    """
    from cairn.backup import backup
    from cairn.embedded._up import read_models

    loaded = settings()
    say = _say(as_json)
    models = None if skip_models else read_models()

    async def go() -> Any:
        async with _admin(loaded, creds, say) as conn:
            return await backup(conn, folder, loaded, read_models=models, say=say)

    manifest = run(go())
    streams = ", ".join(f"{e.name}@{e.last_seq}" for e in manifest.streams)
    done(
        as_json,
        msgspec.to_builtins(manifest),
        f"backup written to {folder}: {streams}",
        f"{len(manifest.read_models)} read-model hashes recorded; restore with"
        f" 'cairn restore {folder}'",
    )


_VERIFY_COLUMNS = [
    ("read_model", "READ MODEL"),
    ("last_seq", "AT SEQ"),
    ("verdict", "VERDICT"),
    ("hash", "HASH NOW"),
]


@cli.command("restore")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="delete streams that already hold messages, each just before restoring it, purge"
    " JOBS (the replaced log's tickets), and delete this home's read models (state/*.sqlite:"
    " rebuilt from the restored log); also how a restore that failed part-way is run again",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=None,
    help="restore each stream with this many replicas instead of the target's (default: the"
    " stream_replicas setting, which cairn cluster init writes; else 3 on a server with"
    " cluster peers, 1 alone)",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="rebuild the read models the manifest names to their recorded positions"
    " and compare their content hashes (exit 1 when one differs)",
)
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_CREDS_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def restore_command(
    folder: Path,
    force: bool,
    replicas: int | None,
    verify: bool,
    creds: Path | None,
    as_json: bool,
) -> None:
    """Restore the backup in DIR: check the manifest and every checksum first (a mismatch
    names the stream and changes nothing), refuse a stream that already holds messages
    (unless --force), then restore each stream with its sequences, timestamps, message ids
    and consumers, the local artifact store's blobs, and compare the read models.

    Restore into a fresh home before the first 'cairn up' (the home's server is started
    alone for it, and 'cairn up' then finds the streams in place), or into a running
    server or cluster whose services are stopped (--creds for its admin).

    \b
    Example:
      CAIRN_HOME=~/.cairn-new cairn restore /backups/cairn-2026-11-30
      CAIRN_HOME=~/.cairn-new cairn up
    """
    from cairn.backup import read_manifest, restore, verify_files, verify_read_models
    from cairn.embedded._up import read_models

    loaded = settings()
    say = _say(as_json)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)  # before anything starts: a bad backup changes nothing
    stale = sorted(loaded.state_path.glob("*.sqlite"))
    if stale and not force:
        raise click.ClickException(
            f"{loaded.state_path} holds read models ({stale[0].name}...) built from another"
            " log: restore into a fresh home, or --force to delete them (they are rebuilt)"
        )

    async def go() -> list[dict[str, Any]]:
        async with _admin(loaded, creds, say, fresh_ok=True) as conn:
            await restore(
                conn, folder, loaded, force=force, replicas=replicas, checked=manifest, say=say
            )
            if not verify or not manifest.read_models:
                return []
            return await verify_read_models(conn, manifest, read_models())

    rows = run(go())
    for path in stale:
        for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            part.unlink(missing_ok=True)
    for row in rows:
        row["verdict"] = "same" if row["same"] else "DIFFERS"
    if as_json:
        done(True, {"restored": [e.name for e in manifest.streams], "read_models": rows})
    else:
        click.echo(f"restored {', '.join(e.name for e in manifest.streams)} from {folder}")
        if rows:
            emit(rows, False, _VERIFY_COLUMNS)
    if any(not row["same"] for row in rows):
        sys.exit(1)
