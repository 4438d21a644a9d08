"""Metrics end to end: reads, downsampling, comparison, malformed batches, the buffer."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from cairn.bus import Connection
from cairn.errors import InvalidInput
from cairn.proto.commands import (
    Accepted,
    CreateExperiment,
    CreateRun,
    ErrorReply,
    Reply,
    StartRun,
)
from cairn.proto.metrics import MetricPoint
from cairn.rpc import MAX_REQUEST_BYTES, Client
from cairn.sdk import AsyncWorkspace
from cairn.sdk._metrics import MAX_BATCH_BYTES, MAX_BATCH_POINTS, MetricBuffer, batches, scalar
from cairn.settings import Settings

_reply = msgspec.json.Decoder(Reply)


@pytest.fixture
async def ws(client: Client, client_settings: Settings, tmp_path: object) -> AsyncWorkspace:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path))
    return AsyncWorkspace(client.conn, client.workspace, settings)


async def test_history_downsampling_and_comparison(ws: AsyncWorkspace) -> None:
    exp = await ws.experiment("curves")
    runs = [await exp.start_run(display_name=f"r{i}") for i in range(3)]
    for i, run in enumerate(runs):
        for step in range(3000):
            run.log("loss", (i + 1) * 1000 - step / 3, step=step)
        run.log("name", "a string")
        await run.complete()
    full = await runs[0].history("loss")
    assert [p[0] for p in full] == list(range(3000))  # paged transparently
    small = await runs[0].history("loss", max_points=100)
    assert len(small) == 100
    assert small[-1][0] == 2999 and small[0][3] <= small[0][2] <= small[0][4]
    assert min(p[3] for p in small) == min(p[2] for p in full)
    assert max(p[4] for p in small) == max(p[2] for p in full)
    table = await ws.compare(exp.id, "loss")
    assert sorted((r["count"], r["max"]) for r in table) == [
        (3000, (i + 1) * 1000) for i in range(3)
    ]
    assert {r["run_id"] for r in table} == {r.id for r in runs}
    # an Azure get_metrics of a long series pages through the history
    assert (await runs[1].get_metrics("loss"))["loss"][:2] == [2000, 2000 - 1 / 3]
    assert (await runs[1].get_metrics("name"))["name"] == "a string"


async def _log_raw(conn: Connection, ws: str, body: bytes) -> Reply:
    msg = await conn.nc.request(f"cairn.cmd.{ws}.metrics.log", body, timeout=10)
    return _reply.decode(msg.data)


def _batch(points: list[list[object]], run_id: str = "m1") -> bytes:
    return json.dumps(
        {"type": "LogMetrics", "command_id": uuid.uuid4().hex, "run_id": run_id, "points": points}
    ).encode()


MALFORMED = {
    "scalar that is an object": ([["a", "scalar", {"x": 1}, 0, 1.0]], "invalid_input"),
    "list with a nested list": ([["a", "list", [[1]], 0, 1.0]], "invalid_input"),
    "table column that is no list": ([["a", "table", {"c": 1}, 0, 1.0]], "invalid_input"),
    "NaN under the strict policy": ([["a", "scalar", "NaN", 0, 1.0]], "invalid_input"),
    "-Infinity in a row": ([["a", "row", {"c": "-Infinity"}, 0, 1.0]], "invalid_input"),
    "a 10 KB metric name": ([["n" * 10_240, "scalar", 1, 0, 1.0]], "invalid_input"),
    "an unknown kind": ([["a", "histogram", 1, 0, 1.0]], "invalid_input"),
    "a negative step": ([["a", "scalar", 1, -1, 1.0]], "invalid_input"),
    "an empty batch": ([], "invalid_input"),
    "too many points": ([["a", "scalar", 1, i, 1.0] for i in range(10_001)], "payload_too_large"),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_batches_get_typed_errors(
    client: Client, client_conn: Connection, case: str
) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="e"))
    await client.send(CreateRun(command_id=uuid.uuid4().hex, run_id="m1", experiment_name="e"))
    points, code = MALFORMED[case]
    reply = await _log_raw(client_conn, client.workspace, _batch(points))
    assert isinstance(reply, ErrorReply) and reply.code == code, reply
    good = await _log_raw(client_conn, client.workspace, _batch([["ok", "scalar", 1, 0, 1.0]]))
    assert not isinstance(good, ErrorReply), good  # the ingester keeps serving


async def test_oversized_and_unknown_run_batches(client: Client, client_conn: Connection) -> None:
    huge = _batch([["a", "scalar", "x" * 4000, i, 1.0] for i in range(80)])
    assert len(huge) > MAX_REQUEST_BYTES
    reply = await _log_raw(client_conn, client.workspace, huge)
    assert isinstance(reply, ErrorReply) and reply.code == "payload_too_large"
    reply = await _log_raw(
        client_conn, client.workspace, _batch([["a", "scalar", 1, 0, 1.0]], "nope")
    )
    assert isinstance(reply, ErrorReply) and reply.code == "not_found"


async def test_the_sdk_surfaces_a_refused_batch(ws: AsyncWorkspace) -> None:
    run = await (await ws.experiment("strict")).start_run()
    run.log("x", scalar(float("nan")))
    with pytest.raises(InvalidInput, match="non-finite"):
        await run.flush()
    run.log("x", 1.0)
    await run.complete()
    assert (await run.get_metrics())["x"] == 1.0


async def test_duplicate_batches_count_once(client: Client, client_conn: Connection) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="e"))
    await client.send(CreateRun(command_id=uuid.uuid4().hex, run_id="d1", experiment_name="e"))
    await client.send(StartRun(command_id=uuid.uuid4().hex, run_id="d1"))
    body = _batch([["a", "scalar", 1, 0, 1.0], ["a", "scalar", 2, 1, 1.0]], "d1")
    first = await _log_raw(client_conn, client.workspace, body)
    again = await _log_raw(client_conn, client.workspace, body)
    assert isinstance(first, Accepted) and isinstance(again, Accepted), (first, again)
    assert again.seq == first.seq
    from cairn.proto.metrics import GetMetrics

    got = await client.ask(GetMetrics(run_id="d1", min_seq=again.seq))
    assert got.data["a"]["value"] == [1, 2]


def test_scalars_are_normalised_or_refused() -> None:
    assert [scalar(v) for v in (1, 2.5, True, "s")] == [1, 2.5, True, "s"]
    assert [scalar(float(x)) for x in ("nan", "inf", "-inf")] == ["NaN", "Infinity", "-Infinity"]
    with pytest.raises(TypeError):
        scalar([1])


def test_batches_respect_both_limits() -> None:
    small = [MetricPoint("m", "scalar", 1.0, i, 0.0) for i in range(12_345)]
    split = batches(small)
    assert [len(b) for b in split] == [MAX_BATCH_POINTS, MAX_BATCH_POINTS, 2345]
    wide = [MetricPoint("m", "scalar", "x" * 1000, i, 0.0) for i in range(1000)]
    split = batches(wide)
    assert sum(len(b) for b in split) == 1000
    assert all(len(msgspec.json.encode(b)) <= MAX_BATCH_BYTES for b in split)
    assert [p.step for b in split for p in b] == list(range(1000))


def test_buffer_numbers_steps_per_name_and_wakes_at_the_threshold() -> None:
    woken: list[int] = []
    buf = MetricBuffer(lambda: woken.append(len(buf)), threshold=3)
    for name in ("a", "b", "a", "a"):
        buf.add(name, "scalar", 1)
    assert [(p.name, p.step) for p in buf.take()] == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    assert woken == [3] and len(buf) == 0
