"""Tamper evidence: ``cairn audit verify`` checks the log against the audit service's signed
checkpoints, ``cairn audit key`` prints the public key they verify with."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cairn.cli._base import cli, emit, json_option, run, settings
from cairn.errors import CairnError, PermissionDenied, Unavailable
from cairn.proto.subjects import AUDIT_KEY
from cairn.settings import Settings

_COLUMNS = [
    ("workspace", "WORKSPACE"),
    ("events", "EVENTS"),
    ("checkpoints", "CHECKPOINTS"),
    ("verified_up_to", "VERIFIED UP TO SEQ"),
    ("uncovered", "NOT YET COVERED"),
    ("verdict", "VERDICT"),
]


@cli.group()
def audit() -> None:
    """Tamper evidence for the event log: each workspace's events form a hash chain whose
    checkpoints the audit service signs into the log (Ed25519). 'verify' checks every event
    against them; 'key' prints the public key they verify with."""


@audit.command("key")
@json_option
def key(as_json: bool) -> None:
    """Print the audit service's public key (hex, Ed25519) and its key id: from the home's
    keys/audit.ed25519.pub when this machine runs the audit service, else as the running
    audit service answers. Keep a copy where the server's writers cannot write: verify with
    --public-key against it."""
    from cairn.audit import key_id_of, public_key_hex, public_key_path, read_public_key

    loaded = settings()
    path = public_key_path(loaded)
    if path.is_file():
        public = read_public_key(path)
        answer = {"key_id": key_id_of(public), "public_key": public_key_hex(public)}
        answer["source"] = str(path)
    else:
        answer = run(_asked(loaded))
        answer["source"] = "the audit service"
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"key id      {answer['key_id']}")
    click.echo(f"public key  {answer['public_key']}")
    click.echo(f"from        {answer['source']}")


async def _asked(loaded: Settings) -> dict[str, str]:
    """The key as the audit service tells it (``cairn.svc.audit.key``), checked to be one."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from cairn.audit import key_id_of, parse_public_key
    from cairn.bus import connect

    conn = await connect(loaded, name="cairn-audit-key")
    try:
        reply = await conn.nc.request(AUDIT_KEY, b"", timeout=loaded.request_timeout)
    except (NoRespondersError, NatsTimeout) as exc:
        if conn.denied(AUDIT_KEY):
            raise PermissionDenied(f"not allowed to ask {AUDIT_KEY}") from exc
        raise Unavailable(
            "no audit key in this home and no audit service answered: run 'cairn up' or"
            " 'cairn serve audit'"
        ) from exc
    finally:
        await conn.close()
    body = json.loads(reply.data)
    public = parse_public_key(str(body.get("public_key", "")), "the audit service's key")
    if body.get("key_id") != key_id_of(public):
        raise CairnError(f"the audit service's key id {body.get('key_id')!r} is not its key's")
    return {"key_id": key_id_of(public), "public_key": str(body["public_key"])}


def _public_key(given: str | None) -> Any:
    from cairn.audit import parse_public_key, public_key_path, read_public_key

    if given is None:
        return read_public_key(public_key_path(settings()))
    if Path(given).is_file():
        return read_public_key(Path(given))
    return parse_public_key(given, "--public-key")


@audit.command("verify")
@click.option("--workspace", default=None, help="only this workspace (default: every one)")
@click.option(
    "--public-key",
    "public_key",
    default=None,
    help="the key to verify with: 64 hex digits or a file holding them (default: the home's"
    " keys/audit.ed25519.pub)",
)
@click.option(
    "--anchor",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="heads the chain must still reach (the audit service's state/audit-heads.json, or a"
    " copy kept elsewhere): shows a truncated log (default: the home's, when it exists)",
)
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='a JSON file with the service user\'s "user" and "password" (default: the'
    " service user of the home's credentials.json)",
)
@json_option
def verify(
    workspace: str | None,
    public_key: str | None,
    anchor: Path | None,
    creds: Path | None,
    as_json: bool,
) -> None:
    """Check every event of the log against its workspace's hash chain and the signed
    checkpoints, and name the first event modified, deleted, inserted or reordered (by
    sequence and subject) per workspace; otherwise how far each verifies and how many events
    after its last checkpoint are not yet covered. Exit status 1 on any finding.

    It reads the log as the services do, with the service user's credentials.

    \b
    Example:
      cairn audit verify
      cairn audit verify --workspace default --public-key 3f…e1 --json
    """
    from cairn.audit import heads_path, read_anchor, verify_log
    from cairn.cli._stack import service_connection_settings
    from cairn.proto.subjects import validate_token

    if workspace is not None:
        validate_token(workspace, "workspace")
    public = _public_key(public_key)
    loaded = service_connection_settings(creds)
    if anchor is None and heads_path(loaded).is_file():
        anchor = heads_path(loaded)
    heads = read_anchor(anchor) if anchor is not None else None

    async def go() -> list[dict[str, Any]]:
        from cairn.bus import connect

        conn = await connect(loaded, name="cairn-audit-verify")
        try:
            return await verify_log(conn, public, workspace=workspace, anchor=heads)
        finally:
            await conn.close()

    rows = run(go())
    emit(rows, as_json, _COLUMNS)
    bad = [row for row in rows if row["verdict"] != "ok"]
    if not as_json:
        for row in bad:
            click.echo(
                f"{row['workspace']}: {row['verdict']} at seq {row['seq']} {row['subject']}:"
                f" {row['finding']}",
                err=True,
            )
    if bad:
        sys.exit(1)
