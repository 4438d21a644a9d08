"""kill -9 of the nats-server during a burst of appends: every acknowledged append survives
exactly once (sync_interval: always), checked Jepsen-style from a recorded history."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path

from cairn.bus import EventStore, connect
from cairn.embedded import NatsServer
from cairn.errors import CairnError
from cairn.proto.subjects import event as event_subject
from tests.conftest import LEAKS_SOCKETS, own_server
from tests.helpers import envelope


async def _read_all(store: EventStore) -> list[tuple[int, str]]:
    """(seq, causation_id) of every event, straight from the stream."""
    out = []
    last = await store.last_seq()
    for seq in range(1, last + 1):
        msg = await store.conn.nc.request(
            "$JS.API.DIRECT.GET.EVENTS", json.dumps({"seq": seq}).encode(), timeout=5
        )
        if msg.headers and msg.headers.get("Status"):
            continue
        out.append((seq, json.loads(msg.data)["causation_id"]))
    return out


@LEAKS_SOCKETS
async def test_acknowledged_appends_survive_kill_9(tmp_path: Path, nats_py_leaks: None) -> None:
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=1.0)
    store = EventStore(conn, attempts=1)
    acked: dict[str, int] = {}
    stop, enough = asyncio.Event(), asyncio.Event()

    async def writer(w: int) -> None:
        subject = event_subject("crash", "experiment", f"w{w}")
        i = 0
        while not stop.is_set():
            cmd = f"w{w}-{i}"
            try:
                result = await store.append(
                    subject, [envelope("crash", f"w{w}", cause=cmd)], expected_seq=None, msg_id=cmd
                )
            except CairnError:
                await asyncio.sleep(0.05)
                continue  # not acknowledged: may or may not be stored, never twice
            acked[cmd] = result.seq
            if len(acked) >= 200:
                enough.set()
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(8)]
    await asyncio.wait_for(enough.wait(), 30)
    server.kill()
    acked_at_kill = dict(acked)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)
    await conn.close()

    restarted = NatsServer(tmp_path / "home", port=server.port)
    await restarted.start()
    try:
        conn = await connect(settings)
        stored = await _read_all(EventStore(conn))
        await conn.close()
    finally:
        restarted.stop()
    counts = collections.Counter(cause for _, cause in stored)
    assert acked_at_kill.keys() <= counts.keys(), "an acknowledged append was lost"
    assert all(counts[c] == 1 for c in acked), "an acknowledged append was stored twice"
    assert max(counts.values()) == 1
    by_cause = dict((cause, seq) for seq, cause in stored)
    assert all(by_cause[c] == seq for c, seq in acked.items())
