"""Replay benchmark: rebuilding every read model from the log, and verifying its audit chain,
beside a raw ordered read of the same stream; and what the chain costs an append.

In one run, over one history generated through the real services (``cairn up`` in a
subprocess, as a user runs it; the SDK makes experiments, runs with tags, properties and
metrics, environment and model versions, until EVENTS holds ``--events`` events):

* every read model replayed from sequence 1 (``cairn replay --all``: each one reads its own
  stream, EVENTS or METRICS, through the live code path into a fresh SQLite file)
  vs a raw ordered replay of the same stream (an ordered consumer, every message fetched in
  order and decoded, nothing applied), once per read model;
* the audit chain verified over the whole log (``cairn audit verify``: one ordered consumer,
  every event digested and chained, every checkpoint's signature checked) vs the raw ordered
  read of EVENTS, and vs batched direct gets without digesting (how the audit service
  follows the log, and how verification read it before);
* append throughput with the audit service vs without: ``bench/audit.py`` itself (fresh
  servers, rounds alternating off and on), not a copy of it.

The machine may be shared: the load average is printed with the figures.

Usage: python bench/replay.py [--events N] [--concurrency C] [--skip-append]
    [--skip-read-models] [--verify-rounds R] [--home DIR]

``--home`` measures again over the history an earlier run left in DIR (its "home"), without
generating one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy

from cairn.audit import public_key_path, read_public_key, read_raw, verify_log
from cairn.bus import Connection, EventStore, connect, stream_seq
from cairn.embedded._auth import embedded_service_settings
from cairn.embedded._up import read_models
from cairn.log import configure_logging
from cairn.projection import Projection, replay
from cairn.proto.assets import EnvironmentSpec
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings, load_settings

sys.path.insert(0, str(Path(__file__).parent))
import audit as audit_bench
from tracking import EmbeddedStack

#: runs per experiment, and how many runs apart an environment and a model version come
_RUNS_PER_EXPERIMENT = 50
_ASSETS_EVERY = 500


class _History:
    """The generator's shared state: how many runs so far, the model's uploaded file."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.runs = 0
        self.staged: tuple[str, str] | None = None


async def _one_run(ws: AsyncWorkspace, h: _History, n: int) -> None:
    exp = await ws.experiment(f"exp-{n // _RUNS_PER_EXPERIMENT}")
    run = await exp.start_run(display_name=f"run {n}")
    await run.set_tags({"team": f"t{n % 7}", "phase": "train"})
    await run.add_properties({"seed": str(n)})
    for step in range(20):
        run.log("loss", 1.0 / (step + 1), step=step)
    run.log("accuracy", 0.5 + (n % 50) / 100)
    await run.set_tags({"phase": "done"})
    await run.complete()
    if n % _ASSETS_EVERY == 0:
        spec = EnvironmentSpec(pip=[f"numpy=={1 + n // _ASSETS_EVERY}.0"])
        await ws.assets.register_environment(f"env-{n % 3}", spec)
        if h.staged is None:
            model = Path(tempfile.mkdtemp(prefix="cairn-bench-model-")) / "model.bin"
            model.write_bytes(os.urandom(4096))
            h.staged = await ws.models.upload(model)
        staging, path = h.staged
        await ws.models.register(f"model-{n % 5}", path, staging_id=staging, tags={"n": str(n)})


async def _worker(ws: AsyncWorkspace, h: _History) -> None:
    while ws.seen_seq < h.target:
        n, h.runs = h.runs, h.runs + 1
        await _one_run(ws, h, n)


async def generate(settings: Settings, events: int, concurrency: int) -> dict[str, Any]:
    conn = await connect(settings)
    ws = AsyncWorkspace(conn, settings.workspace, settings)
    h = _History(events)
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(_worker(ws, h) for _ in range(concurrency)))
    finally:
        await ws.close()
        await conn.close()
    return {"runs": h.runs, "generate_s": round(time.perf_counter() - t0, 1)}


async def _last(conn: Connection, stream: str) -> int:
    return await EventStore(conn, stream=stream).last_seq()


async def raw_ordered(conn: Connection, projection: Projection[Any]) -> tuple[int, float]:
    """Every message of the projection's stream fetched in order by an ordered consumer and
    decoded as the projection decodes it; how many, and the seconds it took."""
    source = projection.source
    last = await _last(conn, source.stream)
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Any) -> None:
        nonlocal count
        source.decode(msg.data)
        count += 1
        if stream_seq(msg.reply) >= last:
            done.set()

    t0 = time.perf_counter()
    sub = await conn.js.subscribe(
        source.subjects,
        stream=source.stream,
        ordered_consumer=True,
        cb=on_msg,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    await asyncio.wait_for(done.wait(), 1200)
    took = time.perf_counter() - t0
    await sub.unsubscribe()
    return count, took


async def raw_direct(conn: Connection) -> tuple[int, float]:
    """Every EVENTS message read by batched direct gets (as the audit service follows the
    log), not digested."""
    t0 = time.perf_counter()
    count = 0
    async for _ in read_raw(conn, "cairn.ev.>"):
        count += 1
    return count, time.perf_counter() - t0


async def _verify_round(conn: Connection, public: Any, events: int) -> dict[str, Any]:
    """The raw ordered read of EVENTS, the raw direct gets, then the verification."""
    out: dict[str, Any] = {}
    events_raw, took = await raw_ordered(conn, read_models()["tracking"]())
    out["events_raw_ordered_per_s"] = round(events_raw / took)
    direct, took = await raw_direct(conn)
    out["events_raw_direct_per_s"] = round(direct / took)
    t0 = time.perf_counter()
    verdicts = await verify_log(conn, public)
    took = time.perf_counter() - t0
    out["verify_per_s"] = round(events / took)
    out["verify_verdicts"] = sorted({v["verdict"] for v in verdicts})
    out["verify_vs_ordered"] = round(out["verify_per_s"] / out["events_raw_ordered_per_s"], 3)
    out["verify_vs_direct"] = round(out["verify_per_s"] / out["events_raw_direct_per_s"], 3)
    return out


async def measure(
    service: Settings, keep: Path, skip_read_models: bool, verify_rounds: int
) -> dict[str, Any]:
    conn = await connect(service)
    out: dict[str, Any] = {"read_models": {}}
    try:
        out["events"] = await _last(conn, "EVENTS")
        out["metrics_batches"] = await _last(conn, "METRICS")
        replay_s = raw_s = 0.0
        models = {} if skip_read_models else read_models()
        for name, make in sorted(models.items()):
            count, raw_took = await raw_ordered(conn, make())
            t0 = time.perf_counter()
            done = await replay(conn, make(), keep / f"{name}.sqlite")
            took = time.perf_counter() - t0
            done.db.close()
            replay_s, raw_s = replay_s + took, raw_s + raw_took
            out["read_models"][name] = {
                "stream_msgs": count,
                "applied": done.events,
                "raw_per_s": round(count / raw_took),
                "replay_per_s": round(count / took),
                "ratio": round(raw_took / took, 3),
            }
        out["all_replay_s"], out["all_raw_s"] = round(replay_s, 2), round(raw_s, 2)
        out["all_ratio"] = round(raw_s / replay_s, 3) if replay_s else None

        public = read_public_key(public_key_path(service))
        rounds = [await _verify_round(conn, public, out["events"]) for _ in range(verify_rounds)]
        out["verify_rounds"] = rounds
        for key in rounds[0]:
            if key != "verify_verdicts":
                out[key] = statistics.median(r[key] for r in rounds)
        out["verify_verdicts"] = sorted({v for r in rounds for v in r["verify_verdicts"]})
    finally:
        await conn.close()
    return out


def report(r: dict[str, Any]) -> None:
    print(f"load average before / after: {r['load_before']} / {r['load_after']}")
    print(f"history: {r['events']:,} events, {r['metrics_batches']:,} metric batches,")
    print(f"  {r['runs']:,} runs, generated in {r['generate_s']} s")
    head = ("read model", "messages", "raw (msg/s)", "replay (msg/s)", "ratio")
    print(f"{head[0]:<14} {head[1]:>9} {head[2]:>12} {head[3]:>15} {head[4]:>6}")
    for name, m in r["read_models"].items():
        print(
            f"{name:<14} {m['stream_msgs']:>9,} {m['raw_per_s']:>12,}"
            f" {m['replay_per_s']:>15,} {m['ratio']:>6.0%}"
        )
    if r["all_ratio"] is not None:
        print(
            f"all read models: replay {r['all_replay_s']} s, raw {r['all_raw_s']} s,"
            f" ratio {r['all_ratio']:.0%} (goal >= 50%)"
        )
    for i, v in enumerate(r["verify_rounds"], start=1):
        print(
            f"  round {i}: verify {v['verify_per_s']:,} ev/s, raw ordered"
            f" {v['events_raw_ordered_per_s']:,} ({v['verify_vs_ordered']:.0%}), raw direct"
            f" {v['events_raw_direct_per_s']:,} ({v['verify_vs_direct']:.0%})"
        )
    print(
        f"audit verify (medians): {r['verify_per_s']:,} ev/s; raw ordered"
        f" {r['events_raw_ordered_per_s']:,}"
        f" ev/s ({r['verify_vs_ordered']:.0%}, goal >= 50%); raw direct gets"
        f" {r['events_raw_direct_per_s']:,} ev/s ({r['verify_vs_direct']:.0%});"
        f" verdicts {r['verify_verdicts']}"
    )
    append = r.get("append")
    if append:
        m = append["median"]
        for mode in ("awaited", "pipelined"):
            off, on = m[f"off_{mode}_per_s"], m[f"on_{mode}_per_s"]
            print(
                f"append {mode}: {off:,.0f}/s without the chain, {on:,.0f}/s with it"
                f" (cost {1 - on / off:.1%}, goal <= 5%)"
            )
    print(json.dumps(r, default=str))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("console", "warning")
    r: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    stack = EmbeddedStack(home=args.home)
    r["home"] = str(stack.home)
    try:
        os.environ["CAIRN_HOME"] = str(stack.home)
        settings = load_settings()
        if args.home is None:
            r.update(await generate(settings, args.events, args.concurrency))
        else:
            r.update(runs=0, generate_s=0)
        keep = Path(tempfile.mkdtemp(prefix="cairn-bench-replay-"))
        r.update(
            await measure(
                embedded_service_settings(settings), keep, args.skip_read_models, args.verify_rounds
            )
        )
    finally:
        stack.stop()
    if not args.skip_append:
        append_args = argparse.Namespace(
            awaited=args.append_awaited,
            pipelined=args.append_pipelined,
            window=100,
            every=1000,
            rounds=args.append_rounds,
        )
        r["append"] = await audit_bench.main(append_args)
    r["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-append", action="store_true")
    parser.add_argument(
        "--skip-read-models", action="store_true", help="measure the verification only"
    )
    parser.add_argument(
        "--verify-rounds",
        type=int,
        default=1,
        help="rounds of raw ordered read, raw direct gets and verification (medians reported)",
    )
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--append-awaited", type=int, default=1000)
    parser.add_argument("--append-pipelined", type=int, default=5000)
    parser.add_argument("--append-rounds", type=int, default=2)
    report(uvloop.run(main(parser.parse_args())))
