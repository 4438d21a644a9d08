"""The gateway puts a replica's chunked answer back together only when its chunks fit: each
names the same count, no more than a replica ever sends, and the whole stays within the
largest answer; anything else is a 502, not memory held for a replica that misbehaves."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
import pytest
from nats.aio.msg import Msg

from cairn.bus import Connection
from cairn.services.gateway._score import CHUNK_HEADER, CHUNKS_HEADER, Scorer, _ask_replica
from cairn.serving import MAX_ANSWER_BYTES, MAX_ANSWER_CHUNKS
from cairn.settings import Settings

#: (index, count) of each chunk a fake replica sends, and its body
Chunks = list[tuple[int, int, bytes]]


async def _answered(
    client_settings: Settings, agent_conn: Connection, chunks: Chunks
) -> tuple[int, bytes]:
    """What the gateway's scorer makes of ``chunks`` sent by a replica's agent (its own
    NATS user, as in a deployment) in answer to one request."""
    subject = f"cairn.serve.chunks-{uuid.uuid4().hex[:8]}.ep.blue"

    async def replica(msg: Msg) -> None:
        for index, count, body in chunks:
            headers = {CHUNK_HEADER: str(index), CHUNKS_HEADER: str(count)}
            await agent_conn.nc.publish(msg.reply, body, headers=headers)

    sub = await agent_conn.nc.subscribe(subject, queue="replicas", cb=replica)
    await agent_conn.nc.flush()
    settings = msgspec.structs.replace(client_settings, nats_user=None, nats_password=None)
    scorer = Scorer(settings)
    try:
        conn = await scorer.connection()
        return await _ask_replica(conn.nc, subject, b"{}", timeout=20.0)
    finally:
        await scorer.close()
        await sub.unsubscribe()


async def test_chunks_that_fit_come_back_whole_in_order(
    client_settings: Settings, agent_conn: Connection
) -> None:
    status, body = await _answered(
        client_settings, agent_conn, [(2, 3, b"c"), (0, 3, b"a"), (1, 3, b"b")]
    )
    assert (status, body) == (200, b"abc")


def _too_large() -> Chunks:
    """Nine chunks of 7.5 MiB (each within a NATS message): 67.5 MiB in all."""
    part = b"x" * (MAX_ANSWER_BYTES // 64 * 7 + MAX_ANSWER_BYTES // 128)
    assert 9 * len(part) > MAX_ANSWER_BYTES
    return [(i, 9, part) for i in range(9)]


@pytest.mark.parametrize(
    "chunks",
    [
        lambda: [(0, 2, b"a"), (1, 3, b"b")],  # the count changes between chunks
        lambda: [(0, MAX_ANSWER_CHUNKS + 1, b"a")],  # more chunks than a replica sends
        lambda: [(3, 2, b"a")],  # an index past the count
        _too_large,  # more bytes than the largest answer
    ],
    ids=["counts-differ", "too-many", "index-past-count", "too-large"],
)
async def test_chunks_that_do_not_fit_are_a_502(
    client_settings: Settings, agent_conn: Connection, chunks: Callable[[], Chunks]
) -> None:
    status, body = await _answered(client_settings, agent_conn, chunks())
    assert status == 502 and b"do not fit together" in body
