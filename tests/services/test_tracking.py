"""The tracking service end to end over NATS, and every kind of bad input it must refuse."""

from __future__ import annotations

import asyncio
import json
import uuid

import msgspec
import pytest

from cairn.bus import Connection
from cairn.errors import (
    InvalidInput,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from cairn.proto.commands import (
    CompleteRun,
    CreateExperiment,
    CreateRun,
    ErrorReply,
    FailRun,
    GetRun,
    ListExperiments,
    ListRuns,
    Reply,
    StartRun,
)
from cairn.rpc import MAX_REQUEST_BYTES, Client

_reply = msgspec.json.Decoder(Reply)


def cid() -> str:
    return uuid.uuid4().hex


async def test_run_lifecycle_and_read_your_writes(client: Client) -> None:
    exp = await client.send(CreateExperiment(command_id=cid(), name="mnist / baseline"))
    assert exp.aggregate_id.startswith("n-")
    await client.send(
        CreateRun(
            command_id=cid(), run_id="r1", experiment_name="mnist / baseline", display_name="first"
        )
    )
    await client.send(StartRun(command_id=cid(), run_id="r1"))
    done = await client.send(CompleteRun(command_id=cid(), run_id="r1"))
    result = await client.ask(GetRun(run_id="r1", min_seq=done.seq))
    assert result.seq >= done.seq
    assert result.data["status"] == "Completed"
    assert result.data["display_name"] == "first"
    assert result.data["created_by"] == client.conn.settings.who
    assert result.data["start_time"] and result.data["end_time"]
    runs = await client.ask(ListRuns(experiment_name="mnist / baseline", min_seq=done.seq))
    assert [r["run_id"] for r in runs.data["runs"]] == ["r1"]
    assert runs.data["next_cursor"] is None
    exps = await client.ask(ListExperiments(min_seq=done.seq))
    assert [(e["name"], e["runs"]) for e in exps.data] == [("mnist / baseline", 1)]


async def test_same_command_twice_gives_the_same_reply(client: Client) -> None:
    await client.send(CreateExperiment(command_id=cid(), name="e"))
    cmd = CreateRun(command_id=cid(), run_id="dup", experiment_name="e")
    first, second = await client.send(cmd), await client.send(cmd)
    assert second.seq == first.seq and second.replayed
    both = await asyncio.gather(
        client.send(StartRun(command_id="s1", run_id="dup")),
        client.send(StartRun(command_id="s1", run_id="dup")),
    )
    assert both[0].seq == both[1].seq


async def test_domain_errors_are_typed(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.send(CreateRun(command_id=cid(), run_id="r", experiment_name="missing"))
    await client.send(CreateExperiment(command_id=cid(), name="e"))
    with pytest.raises(NotFound):
        await client.send(
            CreateRun(command_id=cid(), run_id="c", experiment_name="e", parent_run_id="nope")
        )
    await client.send(CreateRun(command_id=cid(), run_id="r", experiment_name="e"))
    await client.send(FailRun(command_id=cid(), run_id="r", error="boom"))
    with pytest.raises(InvalidTransition):
        await client.send(CompleteRun(command_id=cid(), run_id="r"))
    with pytest.raises(NotFound):
        await client.ask(GetRun(run_id="never"))


async def test_unknown_workspace_is_refused(
    services: None, client_conn: Connection, conn: Connection
) -> None:
    """To a person, a workspace that does not exist is one they are not a member of (which
    workspaces exist is not told); the stack itself is told it does not exist."""
    with pytest.raises(PermissionDenied, match="not a member of workspace no-such-ws"):
        await Client(client_conn, "no-such-ws").send(CreateExperiment(command_id=cid(), name="e"))
    with pytest.raises(NotFound):
        await Client(conn, "no-such-ws").send(CreateExperiment(command_id=cid(), name="e"))


async def _raw(conn: Connection, subject: str, payload: bytes) -> Reply:
    msg = await conn.nc.request(subject, payload, timeout=5)
    return _reply.decode(msg.data)


def _start(ws: str, **fields: object) -> bytes:
    return json.dumps({"type": "StartRun", "command_id": cid(), "run_id": "r", **fields}).encode()


BAD_INPUTS = {
    "malformed JSON": (".run.start", b'{"type": "StartRun", "command_id": '),
    "not an object": (".run.start", b"[1, 2, 3]"),
    "unknown message type": (".run.start", b'{"type": "LaunchMissiles", "command_id": "x"}'),
    "missing field": (".run.start", b'{"type": "StartRun", "command_id": "x"}'),
    "wrong field type": (".run.start", b'{"type": "StartRun", "command_id": "x", "run_id": 5}'),
    "hostile id in body": (
        ".run.start",
        b'{"type": "StartRun", "command_id": "x", "run_id": "a.>"}',
    ),
    "type for another verb": (
        ".run.complete",
        b'{"type": "StartRun", "command_id": "x", "run_id": "r"}',
    ),
    "unknown verb": (".run.explode", b'{"type": "StartRun", "command_id": "x", "run_id": "r"}'),
    "oversized payload": (
        ".run.start",
        b'{"type": "StartRun", "pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}',
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input_gets_an_error_reply_and_the_service_keeps_serving(
    client: Client, client_conn: Connection, case: str
) -> None:
    suffix, payload = BAD_INPUTS[case]
    reply = await _raw(client_conn, f"cairn.cmd.{client.workspace}{suffix}", payload)
    assert isinstance(reply, ErrorReply), reply
    assert reply.code in {"invalid_input", "unknown_type", "payload_too_large", "invalid_name"}
    assert reply.message
    # still serving
    await client.send(CreateExperiment(command_id=cid(), name="after-" + case.replace(" ", "-")))


@pytest.mark.parametrize("ws_token", ["bad$ws", "ws#1", "x" * 65, "ünï"])
async def test_bad_subject_token_gets_an_error_reply(
    client: Client, client_conn: Connection, ws_token: str
) -> None:
    reply = await _raw(client_conn, f"cairn.cmd.{ws_token}.run.start", _start(ws_token))
    assert isinstance(reply, ErrorReply) and reply.code == "invalid_name"
    await client.send(CreateExperiment(command_id=cid(), name="still-up"))


async def test_codes_map_back_to_typed_errors(client: Client) -> None:
    # msgspec checks constraints when decoding, not constructing: the service is the judge
    with pytest.raises(PayloadTooLarge):  # refused before it leaves the client
        await client.send(CreateExperiment(command_id=cid(), name="x" * (MAX_REQUEST_BYTES + 1)))
    with pytest.raises(InvalidInput):
        await client.send(CreateExperiment(command_id=cid(), name="x" * 300))
