"""``cairn export`` and ``cairn import``: one workspace's history as a folder of JSON lines
or Parquet files, carried to another home or cluster (docs/design.md, *Export and import*)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cairn.cli._base import cli, emit, json_option, run
from cairn.settings import Settings

_CREDS_HELP = (
    'a JSON file with the service user\'s "user" and "password" (default: the service user'
    " of the home's credentials.json)"
)


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "a moment, ISO 8601 (e.g. 2026-11-29T08:00:00Z; no zone: UTC)", param_hint="--since"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@contextlib.asynccontextmanager
async def _blobs(loaded: Settings) -> AsyncIterator[Any]:
    """The home's artifact store, as the artifact service opens it."""
    from cairn.storage import LocalBlobStore, S3BlobStore

    s3 = loaded.artifact_s3
    store: Any = (
        await S3BlobStore.open(s3) if s3 is not None else LocalBlobStore(loaded.artifacts_path)
    )
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _target(loaded: Settings, creds: Path | None, as_json: bool) -> AsyncIterator[Any]:
    """A connection as the service user to the target; with no ``creds`` in a home ``cairn
    up`` made whose server is not running, its server is started alone for the import (its
    services stay stopped, as an import needs) and stopped after it."""
    from cairn.bus import connect
    from cairn.cli._stack import home_server_alone
    from cairn.embedded._server import SERVICE_USER

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    async with contextlib.AsyncExitStack() as stack:
        home = loaded.home_path
        if creds is None and (home / "nats" / "nats.conf").is_file():
            server = await stack.enter_async_context(home_server_alone(home, say, "import"))
            if server is not None:
                loaded = server.settings_as(loaded, SERVICE_USER)
        conn = await connect(loaded, name="cairn-import")
        stack.push_async_callback(conn.close)
        yield conn


def _audit_key(loaded: Settings, given: str | None) -> str:
    """The source's audit public key (hex): the one given, else the home's key file when this
    machine runs the audit service, else none (said on stderr: the checkpoints are exported
    all the same, and an import needs the key from elsewhere to check them)."""
    from cairn.audit import public_key_hex, public_key_path, read_public_key

    if given is not None:
        return public_key_hex(_trusted(given))
    path = public_key_path(loaded)
    if path.is_file():
        return public_key_hex(read_public_key(path))
    click.echo(
        f"no audit public key at {path} (the audit service runs elsewhere?): the export names"
        " no key; pass --audit-key, or give the importer the key with --public-key",
        err=True,
    )
    return ""


@cli.command("export")
@click.option("--workspace", required=True, help="the workspace whose history is written")
@click.option(
    "--since",
    default=None,
    help="only what the server stored after this moment (ISO 8601): to carry on an import"
    " of an earlier export",
)
@click.option(
    "--artifacts", is_flag=True, help="also write the blobs the events name (files, models, data)"
)
@click.option(
    "--audit-key",
    "audit_key",
    default=None,
    help="the audit service's public key (64 hex digits or a file holding them) to name in"
    " the export and check its checkpoints with (default: this home's key file)",
)
@click.option(
    "--format",
    "encoding",
    type=click.Choice(["jsonl", "parquet"]),
    default="jsonl",
    show_default=True,
    help="how the parts are written: JSON lines, or Parquet files with the same columns",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the folder to write (new or empty); the same as FOLDER",
)
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_CREDS_HELP,
)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), required=False)
@json_option
def export(
    workspace: str,
    since: str | None,
    artifacts: bool,
    audit_key: str | None,
    encoding: str,
    out: Path | None,
    creds: Path | None,
    folder: Path | None,
    as_json: bool,
) -> None:
    """Write a workspace's history into FOLDER (or --out; new or empty): its events with
    the audit chain over them (events.jsonl), its runs' metric batches (metrics.jsonl), the
    audit service's signed checkpoints (checkpoints.jsonl) and a manifest; with --artifacts
    also the blobs its events name (artifacts/<sha256>). With --format parquet the three
    parts are Parquet files with the same columns (events.parquet, ...; the stored bytes as
    binary). 'cairn import' reads either into another home or cluster.

    It reads the log as the services do, with the service user's credentials.

    \b
    Example:
      cairn export --workspace default --artifacts ./default-export
      cairn export --workspace default --out ./default-parquet --format parquet
      cairn export --workspace default --since 2026-11-29T00:00:00Z ./default-since
    """
    from cairn.cli._stack import service_connection_settings
    from cairn.proto.subjects import validate_token

    if folder is not None and out is not None and folder != out:
        raise click.UsageError(f"two folders given: {folder} and --out {out}; give one")
    folder = folder if folder is not None else out
    if folder is None:
        raise click.UsageError("give the folder to write: FOLDER or --out DIR")
    validate_token(workspace, "workspace")
    moment = _moment(since)
    loaded = service_connection_settings(creds)
    key = _audit_key(loaded, audit_key)

    async def go() -> dict[str, Any]:
        from cairn.bus import connect
        from cairn.portable import export_workspace

        conn = await connect(loaded, name="cairn-export")
        try:
            async with _blobs(loaded) as blobs:
                manifest = await export_workspace(
                    conn,
                    workspace,
                    folder,
                    now=datetime.now(UTC),
                    since=moment,
                    blobs=blobs if artifacts else None,
                    audit_key=key,
                    encoding=encoding,
                )
        finally:
            await conn.close()
        return {
            "workspace": workspace,
            "folder": str(folder),
            "format": encoding,
            "events": manifest.events.count,
            "metric_batches": manifest.metrics.count,
            "checkpoints": manifest.checkpoints.count,
            "artifacts": None if manifest.artifacts is None else len(manifest.artifacts),
            "missing_artifacts": manifest.missing_artifacts,
            "chain": manifest.events.chain,
        }

    row = run(go())
    emit(row, as_json, _EXPORT_COLUMNS)
    if row["missing_artifacts"] and not as_json:
        click.echo(
            f"{len(row['missing_artifacts'])} blob(s) the events name are not in the artifact"
            " store (listed in manifest.json)",
            err=True,
        )


_EXPORT_COLUMNS = [
    ("workspace", "WORKSPACE"),
    ("events", "EVENTS"),
    ("metric_batches", "METRIC BATCHES"),
    ("checkpoints", "CHECKPOINTS"),
    ("artifacts", "ARTIFACTS"),
    ("chain", "CHAIN"),
]
_IMPORT_COLUMNS = [
    ("workspace", "WORKSPACE"),
    ("events", "EVENTS STORED"),
    ("events_present", "ALREADY THERE"),
    ("metrics", "METRIC BATCHES STORED"),
    ("artifacts", "ARTIFACTS STORED"),
    ("signed", "EVENTS SIGNED"),
    ("key", "KEY CHECKED"),
    ("chain", "CHAIN"),
]


def _trusted(given: str | None) -> Any:
    from cairn.audit import parse_public_key, read_public_key

    if given is None:
        return None
    if Path(given).is_file():
        return read_public_key(Path(given))
    return parse_public_key(given, "--public-key")


@cli.command("import")
@click.option(
    "--public-key",
    "public_key",
    default=None,
    help="the source's audit key (64 hex digits or a file holding them) the export's"
    " checkpoints must be signed with; this or --trust-export-key is required",
)
@click.option(
    "--trust-export-key",
    is_flag=True,
    help="check the checkpoints with the key the export names itself (it vouches only for an"
    " export not rewritten whole by someone who could also replace that key)",
)
@click.option(
    "--allow-unsigned-tail",
    is_flag=True,
    help="with --public-key: import although the last events are in no signed checkpoint"
    " yet (they are vouched for by the export's own chain only)",
)
@click.option(
    "--members",
    type=click.Choice(["keep", "drop"]),
    default=None,
    help="the export's membership events grant roles by user name: keep them (the same users"
    " here are the same people) or drop them (an admin adds members here after); required"
    " when the export holds any",
)
@click.option("--check", is_flag=True, help="only check the export; store nothing")
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_CREDS_HELP,
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
def import_(
    public_key: str | None,
    trust_export_key: bool,
    allow_unsigned_tail: bool,
    members: str | None,
    check: bool,
    creds: Path | None,
    folder: Path,
    as_json: bool,
) -> None:
    """Store the workspace history that 'cairn export' wrote into FOLDER in this home or
    cluster, with its events' ids, order and bytes unchanged (and their chain with them), its
    metric batches, and the blobs it holds (each checked against its digest).

    Nothing is stored unless the whole export checks: every line whole, every digest and
    chain hash recomputed equal, the signed checkpoints agreeing with the events, and the
    files the manifest hashed. A workspace that already has other events here is refused; an
    import repeated stores nothing again, and one cut short finishes when run again.

    With --public-key, every event must be in a checkpoint the key verifies, unless
    --allow-unsigned-tail.

    The target's services must be stopped while it runs (the audit service may run): it
    refuses a target whose services consume the log. In a home 'cairn up' made and not
    running, it starts the home's server alone for the import.

    \b
    Example:
      cairn import --public-key 3f…e1 --members keep ./default-export
      cairn import --trust-export-key --check ./default-export
    """
    from cairn.cli._stack import service_connection_settings

    if public_key is not None and trust_export_key:
        raise click.UsageError("give --public-key or --trust-export-key, not both")
    if public_key is None and not trust_export_key:
        raise click.UsageError(
            "give the source's audit key with --public-key, or say --trust-export-key to check"
            " the checkpoints with the key the export names"
        )
    trusted = _trusted(public_key)
    require_signed = public_key is not None and not allow_unsigned_tail
    if check:
        from cairn.portable import verify_export

        loaded_export, signed = verify_export(
            folder, trusted, trust_export_key=trust_export_key, data=False
        )
        if require_signed:
            from cairn.portable import refuse_unsigned

            refuse_unsigned(loaded_export, signed)
        m = loaded_export.manifest
        row = {
            "workspace": m.workspace,
            "events": m.events.count,
            "events_present": None,
            "metrics": m.metrics.count,
            "artifacts": None if m.artifacts is None else len(m.artifacts),
            "signed": signed,
            "unsigned": m.events.count - signed,
            "key": _key_checked(trusted, m.audit_key if trust_export_key else ""),
            "chain": m.events.chain,
        }
        emit(row, as_json, _IMPORT_COLUMNS)
        if not as_json:
            _unsigned(m.events.count, signed)
        return
    loaded = service_connection_settings(creds)

    async def go() -> dict[str, Any]:
        from cairn.portable import import_workspace

        async with _target(loaded, creds, as_json) as conn, _blobs(loaded) as blobs:
            done = await import_workspace(
                conn,
                folder,
                blobs=blobs,
                public=trusted,
                trust_export_key=trust_export_key,
                members="keep" if members == "keep" else "drop" if members else None,
                require_signed=require_signed,
            )
        row = done._asdict()
        row["unsigned"] = done.events + done.events_present - done.signed
        return row

    row = run(go())
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    emit(row, False, _IMPORT_COLUMNS)
    _unsigned(row["events"] + row["events_present"], row["signed"])


def _key_checked(trusted: Any, named: str) -> str:
    """The id of the key the checkpoints were checked with, or "none" (nothing vouched for)."""
    from cairn.audit import key_id_of, parse_public_key

    if trusted is not None:
        return str(key_id_of(trusted))
    if named:
        return str(key_id_of(parse_public_key(named, "the export's audit key")))
    return "none"


def _unsigned(events: int, signed: int) -> None:
    """Say how much of the export no signed checkpoint of the source covers."""
    if signed < events:
        click.echo(
            f"{events - signed} of the export's {events} events are in no checkpoint of the"
            " source verified with an audit key (signed every audit_every_events or"
            " audit_every_s there; none when the export names no key): their chain is the"
            " export's own",
            err=True,
        )
