"""Read models: apply quarantined events again (``cairn projection retry``)."""

from __future__ import annotations

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
