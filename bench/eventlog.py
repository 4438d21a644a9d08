"""Event log benchmark: Cairn's append and projection rebuild beside their physical limits.

In one run, against one real nats-server (JetStream, sync_interval: always, on this machine):

* raw nats-py ``js.publish`` awaited one by one   vs  Cairn ``EventStore.append`` awaited
* raw nats-py ``js.publish_async`` pipelined       vs  Cairn ``append`` pipelined (gather)
* raw ordered-consumer replay of the whole stream  vs  projection rebuild into SQLite

Usage: python bench/eventlog.py [--awaited N] [--pipelined N] [--window W]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy

from cairn.bus import EventStore, connect, provision
from cairn.embedded import NatsServer
from cairn.embedded._server import SERVICE_USER
from cairn.projection import ProjectionRunner
from cairn.proto.events import Envelope, Event, ExperimentCreated, encode_envelope
from cairn.services.tracking import TrackingProjection
from cairn.settings import Settings


def _envelope(i: int) -> Envelope[Event]:
    return Envelope(
        event_id=uuid.uuid4().hex,
        type="ExperimentCreated",
        schema_version=1,
        workspace="bench",
        aggregate_kind="experiment",
        aggregate_id=f"e{i}",
        timestamp=datetime.now(UTC),
        actor="bench",
        causation_id=f"c{i}",
        correlation_id=f"c{i}",
        data=ExperimentCreated(experiment_id=f"e{i}", name=f"experiment {i}"),
    )


async def _timed(n: int, body: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await body()
    return n / (time.perf_counter() - t0)


async def _windowed(n: int, window: int, one: Callable[[int], Awaitable[Any]]) -> None:
    for start in range(0, n, window):
        await asyncio.gather(*(one(i) for i in range(start, min(start + window, n))))


async def main(args: argparse.Namespace) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
    server = NatsServer(home, port=0)
    await server.start()
    assert server.credentials is not None
    settings = msgspec.convert(
        {
            "nats_url": server.url,
            "nats_user": SERVICE_USER,
            "nats_password": server.credentials.service_password,
            "state_dir": str(home / "state"),
        },
        Settings,
    )
    conn = await connect(settings)
    await provision(conn)
    js, store = conn.js, EventStore(conn)
    payload = encode_envelope(_envelope(0))
    tag = uuid.uuid4().hex[:6]
    r: dict[str, float] = {}
    try:
        n, p, w = args.awaited, args.pipelined, args.window

        async def raw_awaited() -> None:
            for i in range(n):
                await js.publish(f"cairn.ev.bench.experiment.ra{tag}{i}", payload)

        async def cairn_awaited() -> None:
            for i in range(n):
                await store.append(
                    f"cairn.ev.bench.experiment.ca{tag}{i}",
                    [_envelope(i)],
                    expected_seq=0,
                    msg_id=f"ca{tag}{i}",
                )

        async def raw_pipelined() -> None:
            for start in range(0, p, w):
                futures = [
                    await js.publish_async(f"cairn.ev.bench.experiment.rp{tag}{i}", payload)
                    for i in range(start, min(start + w, p))
                ]
                await asyncio.gather(*futures)

        async def cairn_pipelined() -> None:
            await _windowed(
                p,
                w,
                lambda i: store.append(
                    f"cairn.ev.bench.experiment.cp{tag}{i}",
                    [_envelope(i)],
                    expected_seq=0,
                    msg_id=f"cp{tag}{i}",
                ),
            )

        r["raw_awaited"] = await _timed(n, raw_awaited)
        r["cairn_awaited"] = await _timed(n, cairn_awaited)
        r["raw_pipelined"] = await _timed(p, raw_pipelined)
        r["cairn_pipelined"] = await _timed(p, cairn_pipelined)

        last = await store.last_seq()

        async def raw_replay() -> None:
            done = asyncio.Event()

            async def on_msg(msg: Any) -> None:
                if msg.metadata.sequence.stream >= last:
                    done.set()

            sub = await js.subscribe(
                "cairn.ev.>",
                stream="EVENTS",
                ordered_consumer=True,
                cb=on_msg,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            await asyncio.wait_for(done.wait(), 600)
            await sub.unsubscribe()

        r["raw_replay"] = await _timed(last, raw_replay)

        # from an empty read model until it has applied the whole log
        runner = ProjectionRunner(conn, home / "state.sqlite", TrackingProjection())
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(runner.run(stop))
        await runner.wait_for(last, timeout=600)
        r["projection_rebuild"] = last / (time.perf_counter() - t0)
        stop.set()
        await task
        runner.close()
        r["events_replayed"] = last
    finally:
        await conn.close()
        server.stop()
    return r


def report(r: dict[str, float]) -> None:
    rows = [
        ("append, awaited one by one", "raw_awaited", "cairn_awaited"),
        ("append, pipelined", "raw_pipelined", "cairn_pipelined"),
        ("replay / rebuild", "raw_replay", "projection_rebuild"),
    ]
    print(f"{'':<28} {'raw (msg/s)':>12} {'cairn (msg/s)':>14} {'ratio':>7}")
    for label, raw, ours in rows:
        print(f"{label:<28} {r[raw]:>12,.0f} {r[ours]:>14,.0f} {r[ours] / r[raw]:>7.0%}")
    print(f"events replayed: {int(r['events_replayed'])}")
    print(json.dumps({k: round(v, 1) for k, v in r.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--awaited", type=int, default=2000)
    parser.add_argument("--pipelined", type=int, default=10000)
    parser.add_argument("--window", type=int, default=1000)
    report(uvloop.run(main(parser.parse_args())))
