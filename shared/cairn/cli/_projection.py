"""Read models: apply quarantined events again (``cairn projection retry``), rebuild them
from the log and compare them with the live ones (``cairn replay``)."""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cairn.cli._base import cli, emit, json_option, run, settings

_RETRY_COLUMNS = [
    ("read_model", "READ MODEL"),
    ("instance", "INSTANCE"),
    ("retried", "RETRIED"),
    ("applied", "APPLIED"),
    ("quarantined", "STILL QUARANTINED"),
    ("error", "ERROR"),
]


@cli.group()
def projection() -> None:
    """Read models: apply their quarantined events again. 'cairn status' shows how many events
    each read model has quarantined (events it could not apply, set aside so that it keeps
    serving)."""


@projection.command("retry")
@click.argument("name", required=False)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="seconds to wait for answers"
)
@json_option
def retry(name: str | None, timeout: float, as_json: bool) -> None:
    """Apply the quarantined events of read model NAME (default: every read model) again, on
    every instance that holds it, after a fix; those that apply leave the quarantine."""
    from cairn.bus import connect
    from cairn.projection import retry_quarantined

    async def go() -> list[dict[str, Any]]:
        conn = await connect(settings(), name="cairn-projection-retry")
        try:
            return await retry_quarantined(conn, name, timeout=timeout)
        finally:
            await conn.close()

    emit(run(go()), as_json, _RETRY_COLUMNS)


_REPLAY_COLUMNS = [
    ("read_model", "READ MODEL"),
    ("last_seq", "UP TO SEQ"),
    ("events", "EVENTS"),
    ("quarantined", "QUARANTINED"),
    ("hash", "CONTENT HASH"),
]
_VERIFY_COLUMNS = [
    ("read_model", "READ MODEL"),
    ("instance", "INSTANCE"),
    ("last_seq", "AT SEQ"),
    ("verdict", "VERDICT"),
    ("live_hash", "LIVE HASH"),
]


def _moment(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is no ISO 8601 time (e.g. 2026-11-29T14:05:00+00:00)",
            param_hint="--until-time",
        ) from exc
    return moment.astimezone().timestamp()  # a time without a zone is local time


def _check_choice(name: str | None, every: bool, known: dict[str, Any]) -> None:
    if name is not None and every:
        raise click.BadParameter("--projection and --all choose differently: give one")
    if name is not None and name not in known:
        raise click.BadParameter(
            f"no read model called {name!r}; these exist: {', '.join(sorted(known))}",
            param_hint="--projection",
        )


def _show_verified(rows: list[dict[str, Any]], as_json: bool) -> None:
    """The verdicts; the first differing row of each read model that differs (on stderr);
    exit status 1 when any differs or an instance failed."""
    for row in rows:
        row["verdict"] = "error" if "error" in row else ("same" if row["same"] else "DIFFERS")
    emit(rows, as_json, _VERIFY_COLUMNS)
    if not as_json:
        for row in rows:
            if row.get("difference") is not None:
                click.echo(
                    f"{row['read_model']} on {row['instance']}: first difference"
                    f" {json.dumps(row['difference'], default=str)}",
                    err=True,
                )
            elif "error" in row:
                click.echo(f"{row['instance']}: {row['error']}", err=True)
    if any(row["verdict"] != "same" for row in rows):
        sys.exit(1)


@cli.command()
@click.option("--projection", "name", default=None, help="the one read model to replay")
@click.option("--all", "every", is_flag=True, help="every read model (the default)")
@click.option("--until-seq", type=click.IntRange(min=1), default=None, help="stop at this sequence")
@click.option(
    "--until-time",
    default=None,
    help="only what the server stored at or before this ISO 8601 time (no zone: local time)",
)
@click.option(
    "--verify",
    is_flag=True,
    help="have each running service compare its read models with a replay to its own position",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="leave the replayed read models in this new folder (<name>.sqlite), to query",
)
@click.option(
    "--creds",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='a JSON file with the service user\'s "user" and "password" (default: the'
    " service user of the home's credentials.json)",
)
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="seconds to wait (--verify)"
)
@json_option
def replay(
    name: str | None,
    every: bool,
    until_seq: int | None,
    until_time: str | None,
    verify: bool,
    keep: Path | None,
    creds: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Rebuild read models from sequence 1 of the log into a temporary store and print a
    content hash of each (SHA-256 over every row, in a canonical order: equal hashes, equal
    read models). With --until-seq or --until-time, the read models as they were then.

    --verify asks every running service instead: each copies its live read models at one
    position, replays the log to that same position beside them and compares; a difference
    names the first row that differs. It exits 1 when any read model differs.

    It reads the log as the services do, with the service user's credentials.

    \b
    Example:
      cairn replay --all
      cairn replay --projection tracking --until-time 2026-11-29T14:00:00Z --keep ./then
      cairn replay --verify
    """
    from cairn.cli._stack import service_connection_settings
    from cairn.embedded._up import read_models

    known = read_models()
    _check_choice(name, every, known)
    if verify and (until_seq is not None or until_time is not None or keep is not None):
        raise click.BadParameter(
            "--verify compares each read model at its own live position:"
            " --until-seq, --until-time and --keep mean nothing with it"
        )
    moment = _moment(until_time)
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise click.BadParameter(f"{keep} is not empty", param_hint="--keep")
    loaded = service_connection_settings(creds)

    async def verified() -> list[dict[str, Any]]:
        from cairn.bus import connect
        from cairn.projection import verify_read_models

        conn = await connect(loaded, name="cairn-replay-verify")
        try:
            return await verify_read_models(conn, name, timeout=timeout)
        finally:
            await conn.close()

    async def replayed(folder: Path) -> list[dict[str, Any]]:
        from cairn.bus import connect
        from cairn.projection import replay as replay_one

        conn = await connect(loaded, name="cairn-replay")
        rows = []
        try:
            for model, make in sorted(known.items()):
                if name not in (None, model):
                    continue
                done = await replay_one(conn, make(), folder / f"{model}.sqlite", until_seq, moment)
                done.db.close()
                rows.append(
                    {
                        "read_model": done.read_model,
                        "last_seq": done.last_seq,
                        "events": done.events,
                        "quarantined": done.quarantined,
                        "hash": done.hash,
                    }
                )
        finally:
            await conn.close()
        return rows

    if verify:
        _show_verified(run(verified()), as_json)
        return
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        emit(run(replayed(keep)), as_json, _REPLAY_COLUMNS)
        return
    with tempfile.TemporaryDirectory(prefix="cairn-replay-") as tmp:
        emit(run(replayed(Path(tmp))), as_json, _REPLAY_COLUMNS)
