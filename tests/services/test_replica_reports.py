"""A replica's ``failed`` report, without a scheduler: sent again (the same command) until
acknowledged, as the ``ready`` report is, and given up after a bounded time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from nats.aio.msg import Msg

from cairn.proto.commands import Accepted
from cairn.proto.serving import ReportReplica
from cairn.rpc import Client
from cairn.services.agent._runner import _send_failed
from tests.conftest import own_server

SUBJECT = "cairn.cmd.ws.replica.report"


def _failed() -> ReportReplica:
    return ReportReplica(
        command_id="f" * 32,
        endpoint="ep",
        deployment="blue",
        run_id="r" * 32,
        attempt=1,
        phase="failed",
        error="init() raised",
    )


async def test_a_lost_failed_report_is_sent_again_until_acknowledged(tmp_path: Path) -> None:
    """The scheduler away when the replica fails (no responder), then a report lost (asked,
    never answered), then acknowledged: the report arrives, the same command each time."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=0.5)
    try:
        client = Client(conn, "ws", attempts=1, timeout=0.5)
        cmd = _failed()
        tried = asyncio.Event()

        async def send() -> object:
            tried.set()
            return await client.send(cmd)

        sending = asyncio.create_task(
            _send_failed(send, stop=asyncio.Event(), within_s=120, first_s=0.05, most_s=0.2)
        )
        await asyncio.wait_for(tried.wait(), 30)
        seen: list[str] = []

        async def scheduler(msg: Msg) -> None:
            body = msgspec.json.decode(msg.data)
            seen.append(body["command_id"])
            if len(seen) == 1:
                return  # lost: the agent's request times out
            reply = Accepted(command_id=body["command_id"], aggregate_id="ep_blue", seq=1)
            await msg.respond(msgspec.json.encode(reply))

        sub = await conn.nc.subscribe(SUBJECT, cb=scheduler)
        assert await asyncio.wait_for(sending, 60) is True
        assert len(seen) >= 2 and set(seen) == {cmd.command_id}
        await sub.unsubscribe()
    finally:
        await conn.close()
        server.stop()


async def test_a_failed_report_is_given_up_after_its_bound(tmp_path: Path) -> None:
    """Nobody ever answers: the report is given up (False) once ``within_s`` passed, and at
    once when the attempt is gone (``stop``)."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=0.5)
    try:
        client = Client(conn, "ws", attempts=1, timeout=0.2)
        cmd = _failed()
        sent = await _send_failed(
            lambda: client.send(cmd), stop=asyncio.Event(), within_s=1.0, first_s=0.05
        )
        assert sent is False
        gone = asyncio.Event()
        gone.set()
        assert await _send_failed(lambda: client.send(cmd), stop=gone) is False
    finally:
        await conn.close()
        server.stop()
