"""A responder tells an unknown message type from a known type with a bad field by the request's
tag, not by the wording of the decoder's error."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from cairn.bus import Connection
from cairn.proto.commands import ErrorReply, Reply
from cairn.rpc import Client

_reply = msgspec.json.Decoder(Reply)

CASES = {
    b'{"type": "LaunchMissiles", "command_id": "x"}': "unknown_type",
    b'{"type": 5, "command_id": "x"}': "unknown_type",
    b'{"type": "StartRun", "command_id": "x"}': "invalid_input",
    b'{"type": "StartRun", "command_id": 5, "run_id": "r"}': "invalid_input",
    b'{"command_id": "x", "run_id": "r"}': "invalid_input",
    b"[1, 2, 3]": "invalid_input",
}


@pytest.mark.parametrize("payload", CASES)
async def test_the_error_code_follows_the_tag(
    client: Client, client_conn: Connection, payload: bytes
) -> None:
    msg = await client_conn.nc.request(f"cairn.cmd.{client.workspace}.run.start", payload, 5)
    reply = _reply.decode(msg.data)
    assert isinstance(reply, ErrorReply) and reply.code == CASES[payload], reply


async def test_an_expected_refusal_is_not_logged_as_news(client: Client) -> None:
    """A query for something that does not exist is answered ``NotFound`` and logged at debug
    only: an everyday answer, not a line in the services' log."""
    import structlog

    from cairn.errors import NotFound
    from cairn.proto.commands import GetRun

    with structlog.testing.capture_logs() as logs:
        with pytest.raises(NotFound):
            await client.ask(GetRun(run_id="no-such-run"))
    refused = [e for e in logs if e.get("event") == "request_refused"]
    assert all(e["log_level"] == "debug" for e in refused), refused


async def test_waiting_queries_do_not_hold_the_services_slots(client: Client) -> None:
    """More long-polls than a responder serves at once (a studio page each) wait for a
    sequence no read model has; a plain query is answered while every one of them waits."""
    from cairn.proto.metrics import GetMetrics, MetricHistory

    waits = [
        asyncio.create_task(
            client.ask(MetricHistory(run_id="r1", name="loss", min_seq=10**12, wait_s=15))
        )
        for _ in range(100)
    ]
    try:
        await asyncio.sleep(0.5)  # let them reach the service
        answered = await client.ask(GetMetrics(run_id="r1"))
        assert answered.data == {}
        assert not any(w.done() for w in waits)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
