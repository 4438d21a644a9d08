"""The event feed (``cairn events tail``) and webhooks (``cairn webhook``)."""

from __future__ import annotations

import json
import secrets
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, done, emit, json_option, run, with_workspace

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace, FeedEvent


@cli.group()
def events() -> None:
    """The workspace's event log, as typed events (docs/events.md lists them).

    \b
    Examples:
      cairn events tail --type RunCompleted --type RunFailed -f
      cairn events tail --since 2026-11-29T08:00:00Z --json
      cairn events tail -f --durable ci --json    # resumes where the last one stopped
    """


def _since(value: str | None) -> int | datetime | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "a stream sequence (an integer) or a moment (ISO 8601, e.g. 2026-11-29T08:00:00Z)",
            param_hint="--since",
        ) from None


def _line(event: FeedEvent) -> str:
    return (
        f"{event.seq:>8}  {event.time.isoformat(timespec='seconds')}  {event.type:<26}"
        f"  {event.kind}/{event.entity_id}  {event.actor}"
    )


@events.command("tail")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="only events of this type (repeat for more); an unknown name lists the valid ones",
)
@click.option("--since", default=None, help="after this stream sequence, or from this moment")
@click.option("-f", "--follow", is_flag=True, help="keep waiting for new events")
@click.option(
    "--durable",
    default=None,
    help="record the position under this name (on this machine) and resume from it next time",
)
@json_option
def tail(
    types: tuple[str, ...], since: str | None, follow: bool, durable: str | None, as_json: bool
) -> None:
    """Print the workspace's events, oldest first: one line each, or one JSON object per line
    with --json (seq, time, type, workspace, kind, entity_id, actor, command_id, causation_id,
    correlation_id and the typed event's data).

    Without --since it starts at the beginning of the log; with -f it then waits for new
    events until interrupted. With --durable a later run resumes after the last event this one
    printed (an event may be printed twice around a crash: its seq tells).

    \b
    Examples:
      cairn events tail --type ModelVersionRegistered
      cairn events tail -f --json | jq 'select(.type == "RunFailed")'
    """
    start = _since(since)

    async def go(ws: AsyncWorkspace) -> None:
        async for event in ws.events(types, since=start, durable=durable, follow=follow):
            if as_json:
                click.echo(json.dumps(event.to_json(), default=str))
            else:
                click.echo(_line(event))

    try:
        run(with_workspace(go))
    except KeyboardInterrupt:
        sys.exit(130)


_COLUMNS = [
    ("id", "ID"),
    ("url", "URL"),
    ("events", "EVENTS"),
    ("filters", "FILTERS"),
    ("created_by", "BY"),
    ("dead_letters", "DEAD LETTERS"),
]
_DEAD_COLUMNS = [
    ("webhook", "WEBHOOK"),
    ("delivery_id", "DELIVERY"),
    ("event_type", "EVENT"),
    ("event_seq", "SEQ"),
    ("attempts", "ATTEMPTS"),
    ("status", "STATUS"),
    ("error", "ERROR"),
    ("at", "AT"),
]


@cli.group()
def webhook() -> None:
    """Webhooks: the workspace's events POSTed to a URL, signed (docs/events.md).

    \b
    Examples:
      cairn webhook create --url https://ci.example/cairn --events RunCompleted,RunFailed
      cairn webhook list
      cairn webhook deliveries
    """


def _filters(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--filter")
        out[key] = value
    return out


def _secret(from_stdin: bool, secret_file: str | None) -> tuple[str, bool]:
    """The signing secret, and whether it was made here (then it is printed once)."""
    if from_stdin and secret_file is not None:
        raise click.UsageError("give --secret or --secret-file, not both")
    if secret_file is not None:
        with click.open_file(secret_file, "r", encoding="utf-8") as f:
            return str(f.read()).strip(), False
    if from_stdin:
        if sys.stdin.isatty():
            return str(click.prompt("secret", hide_input=True, prompt_suffix=": ")), False
        return sys.stdin.read().strip(), False
    return "whsec_" + secrets.token_urlsafe(32), True


@webhook.command("create")
@click.option("--url", required=True, help="where to POST (http or https)")
@click.option(
    "--events",
    "event_types",
    required=True,
    help="comma-separated event types, e.g. RunCompleted,ModelVersionRegistered",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="KEY=VALUE every delivered event must match (a field of the event, kind, id, or"
    " experiment: a run's experiment name); repeat for more",
)
@click.option(
    "--secret",
    "secret_stdin",
    is_flag=True,
    help="read the signing secret from stdin (a hidden prompt on a terminal); without it or"
    " --secret-file a random one is made and printed once",
)
@click.option("--secret-file", default=None, help="read the signing secret from this file")
@click.option("--description", default="", help="what the webhook is for")
@json_option
def webhook_create(
    url: str,
    event_types: str,
    filters: tuple[str, ...],
    secret_stdin: bool,
    secret_file: str | None,
    description: str,
    as_json: bool,
) -> None:
    """Create a webhook: the workspace's events of --events, matching every --filter, are
    POSTed to --url as Event Grid events, signed with the secret (header
    Cairn-Webhook-Signature), retried with backoff, and listed by 'cairn webhook deliveries'
    when every attempt failed. The secret is kept sealed and never shown again.

    \b
    Examples:
      cairn webhook create --url https://ci.example/hook --events RunCompleted \\
          --filter experiment=nightly
      cairn webhook create --url http://10.0.0.7:9000/ --events ModelVersionRegistered --secret
    """
    types = [t.strip() for t in event_types.split(",") if t.strip()]
    wanted = _filters(filters)
    secret, made = _secret(secret_stdin, secret_file)

    async def go(ws: AsyncWorkspace) -> str:
        return await ws.webhooks.create(
            url, types, secret=secret, filters=wanted, description=description
        )

    webhook_id = run(with_workspace(go))
    data: dict[str, Any] = {"id": webhook_id, "url": url, "events": types}
    lines = [f"webhook {webhook_id} created"]
    if made:
        data["secret"] = secret
        lines.append(f"signing secret (shown once, keep it): {secret}")
    done(as_json, data, *lines)


@webhook.command("list")
@json_option
def webhook_list(as_json: bool) -> None:
    """The workspace's webhooks (never their secrets)."""

    async def go(ws: AsyncWorkspace) -> list[dict[str, Any]]:
        return await ws.webhooks.list()

    emit(run(with_workspace(go)), as_json, _COLUMNS)


@webhook.command("delete")
@click.argument("webhook_id")
@json_option
def webhook_delete(webhook_id: str, as_json: bool) -> None:
    """Delete webhook WEBHOOK_ID: no more deliveries (one in flight may still arrive)."""

    async def go(ws: AsyncWorkspace) -> None:
        await ws.webhooks.delete(webhook_id)

    run(with_workspace(go))
    done(as_json, {"id": webhook_id, "deleted": True}, f"webhook {webhook_id} deleted")


@webhook.command("deliveries")
@click.option("--webhook", "webhook_id", default=None, help="only this webhook's")
@json_option
def webhook_deliveries(webhook_id: str | None, as_json: bool) -> None:
    """The dead-letter list: deliveries given up after every attempt failed (the last HTTP
    status and error; never the receiver's answer)."""

    async def go(ws: AsyncWorkspace) -> list[dict[str, Any]]:
        return await ws.webhooks.dead_letters(webhook_id)

    emit(run(with_workspace(go)), as_json, _DEAD_COLUMNS)
