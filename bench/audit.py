"""Tamper evidence benchmark: append throughput with and without the audit service, and what
the chain costs in bytes and in reading.

Each round starts a fresh nats-server (JetStream, sync_interval: always) and appends
``--awaited`` events one by one, then ``--pipelined`` more in concurrent windows of
``--window``, each to a subject of its own with the subject CAS, as ``EventStore.append``
does for a new aggregate. "on" rounds run the audit service in the same process (as
``cairn up`` does), following and signing every ``--every`` events; "off" rounds do not.
Rounds alternate off, on, off, on... After an "on" round: how long after the last append
the service had signed every full window, the bytes of the checkpoints beside the events',
and how fast ``verify_log`` reads (one ordered consumer), digests and checks the whole log.

Usage: python bench/audit.py [--awaited N] [--pipelined N] [--window W] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from cairn.audit import read_raw, verify_log
from cairn.bus import EventStore, connect, provision
from cairn.embedded import NatsServer
from cairn.embedded._server import SERVICE_USER
from cairn.log import configure_logging
from cairn.proto import subjects
from cairn.proto.events import Envelope, Event, ExperimentCreated
from cairn.services.audit import AuditService
from cairn.settings import Settings

WS = "bench"


def _envelope(i: int) -> Envelope[Event]:
    return Envelope(
        event_id=uuid.uuid4().hex,
        type="ExperimentCreated",
        schema_version=1,
        workspace=WS,
        aggregate_kind="experiment",
        aggregate_id=f"e{i}",
        timestamp=datetime.now(UTC),
        actor="bench",
        causation_id=f"c{i}",
        correlation_id=f"c{i}",
        data=ExperimentCreated(experiment_id=f"e{i}", name=f"experiment {i}"),
    )


async def _append(store: EventStore, i: int) -> None:
    subject = subjects.event(WS, "experiment", f"e{i}")
    await store.append(subject, [_envelope(i)], expected_seq=0, msg_id=uuid.uuid4().hex)


async def _round(args: argparse.Namespace, audited: bool) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cairn-bench-audit-"))
    server = NatsServer(home, port=0)
    await server.start()
    assert server.credentials is not None
    settings = msgspec.convert(
        {
            "home": str(home),
            "nats_url": server.url,
            "nats_user": SERVICE_USER,
            "nats_password": server.credentials.service_password,
            "state_dir": str(home / "state"),
            "audit_every_events": args.every,
        },
        Settings,
    )
    conn = await connect(settings)
    await provision(conn)
    store = EventStore(conn)
    stop = asyncio.Event()
    service: AuditService | None = None
    task: asyncio.Task[None] | None = None
    out: dict[str, Any] = {"audit": "on" if audited else "off"}
    try:
        if audited:
            service = AuditService(conn, settings)
            await service.start()
            task = asyncio.create_task(service.run(stop))
        t0 = time.perf_counter()
        for i in range(args.awaited):
            await _append(store, i)
        out["awaited_per_s"] = args.awaited / (time.perf_counter() - t0)
        base = args.awaited
        t0 = time.perf_counter()
        for start in range(0, args.pipelined, args.window):
            end = min(start + args.window, args.pipelined)
            await asyncio.gather(*(_append(store, base + i) for i in range(start, end)))
        done = time.perf_counter()
        out["pipelined_per_s"] = args.pipelined / (done - t0)
        if service is not None:
            await _covered(conn, service, args, out, done)
    finally:
        stop.set()
        if task is not None:
            await task
        await conn.close()
        server.stop()
    return out


async def _covered(
    conn: Any, service: AuditService, args: argparse.Namespace, out: dict[str, Any], done: float
) -> None:
    """Until every full window is signed: the lag, the bytes, a restart's read-back."""
    total = args.awaited + args.pipelined
    want = total // args.every * args.every
    for _ in range(6000):  # a minute at most
        chain = service.chains.get(WS)
        if chain is not None and chain.up_to_seq >= want:
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("the audit service did not sign every full window within a minute")
    out["signed_lag_s"] = time.perf_counter() - done
    events = checkpoints = 0
    async for raw in read_raw(conn, "cairn.ev.>"):
        if raw.subject == subjects.audit_chain(WS):
            checkpoints += len(raw.data)
        else:
            events += len(raw.data)
    out["event_kib"] = events / 1024
    out["checkpoint_kib"] = checkpoints / 1024
    t0 = time.perf_counter()
    rows = await verify_log(conn, service.public)
    out["verify_per_s"] = total / (time.perf_counter() - t0)
    assert rows[0]["verdict"] == "ok", rows


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode in ("off", "on"):
        these = [r for r in rounds if r["audit"] == mode]
        for key in these[0]:
            if key != "audit":
                summary[f"{mode}_{key}"] = round(statistics.median(r[key] for r in these), 2)
    return summary


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("console", "warning")  # stdout is the JSON result
    rounds = []
    for i in range(args.rounds * 2):
        rounds.append(await _round(args, audited=bool(i % 2)))
    return {"rounds": rounds, "median": _summary(rounds)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--awaited", type=int, default=1000)
    parser.add_argument("--pipelined", type=int, default=5000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    print(json.dumps(uvloop.run(main(parser.parse_args())), indent=2, default=str))
