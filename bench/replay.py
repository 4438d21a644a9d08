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

``--synthesize`` makes a large history quickly (the services and SDK make ≈ 200 events/s
here). What is real and what is copied:

* real: a seed of ``--seed-events`` events (20,000 by default) made as above, through
  ``cairn up`` and the SDK, with its METRICS batches and the audit service's checkpoints;
* copied: the seed's events and metric batches (not its checkpoints), again and again until
  EVENTS holds ``--events``. Each copy is a workspace of its own (``<ws>-copy<k>``: the
  envelopes' and batches' ``workspace``, the ``WorkspaceCreated`` name, the subjects' workspace
  token), and every 32-hex-digit id of the seed (aggregate, event, command, correlation,
  causation, staging ids, in subjects, envelopes, data and ``Nats-Msg-Id``) is replaced by a
  fresh one, the same fresh one wherever the seed had the same id; so each copy's events are
  valid for the read models, and no copy is a duplicate of another. Names (experiments, models,
  environments), actors and metric batches' contents are the seed's; the envelopes'
  timestamps are the time of the copy's append (as a service stamps its events; with the
  seed's, the live tracking service fails the copies' interactive runs as lost, their starts
  being older than its heartbeat bound). Model files are not copied in the blob store (the
  copies' versions name staging paths that hold nothing; no read model reads them);
* appended as the services append: ``EventStore.append`` with the seed's batches as they
  were (one atomic batch per command), each event re-encoded from its decoded ``Envelope``, with
  the expected last subject sequence (0 for an aggregate's first append, then its previous
  append's sequence), and metric batches with ``EventStore.publish`` and a ``Nats-Msg-Id`` as the
  ingester does; pipelined (256 in flight; an aggregate's next append waits for its previous
  one's sequence, so within an aggregate the order is the seed's; across aggregates an event
  may land later than in the seed, never before one sent ahead of it). A CAS conflict stops
  the run, naming what the subject holds, unless its last message carries the append's own
  ``Nats-Msg-Id`` (an answer lost on a loaded machine, then a retry the CAS refused);
* chained and signed by the real audit service of ``cairn up``, which follows EVENTS as it
  always does: the run waits until the last checkpoint of every copy's workspace covers that
  workspace's last event, so verification checks the whole log.

Usage: python bench/replay.py [--events N] [--concurrency C] [--skip-append]
    [--skip-read-models] [--verify-rounds R] [--home DIR] [--synthesize [--seed-events S]]

``--home`` measures again over the history an earlier run left in DIR (its "home"), without
generating one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from cairn.audit import (
    RawEvent,
    public_key_path,
    read_in_order,
    read_public_key,
    read_raw,
    verify_log,
)
from cairn.bus import Connection, EventStore, connect, stream_seq
from cairn.embedded._auth import embedded_service_settings
from cairn.embedded._up import read_models
from cairn.errors import ConcurrencyConflict
from cairn.log import configure_logging
from cairn.projection import Projection, replay
from cairn.proto import subjects
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.events import ChainCheckpointed, decode_envelope
from cairn.proto.streams import EVENTS, METRICS
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


# -- --synthesize: a seed history through the real services, copied into the log ----------

_HEX_ID = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_WINDOW = 256  # appends in flight at once


class _Copy:
    """One copy of the seed: its own workspace, and a fresh id for every id of the seed
    (32 lowercase hex digits: aggregate, event, command, staging and correlation ids), the
    same fresh id wherever the seed had the same id."""

    def __init__(self, ws: str, index: int) -> None:
        self.ws = ws.encode()
        self.new_ws = f"{ws}-copy{index}".encode()
        self.ids: dict[bytes, bytes] = {}
        self.last_seq = 0

    def _id(self, m: re.Match[bytes]) -> bytes:
        old = m.group(0)
        new = self.ids.get(old)
        if new is None:
            new = self.ids[old] = uuid.uuid4().hex.encode()
        return new

    def data(self, data: bytes) -> bytes:
        data = _HEX_ID.sub(self._id, data)
        data = data.replace(
            b'"workspace":"' + self.ws + b'"', b'"workspace":"' + self.new_ws + b'"'
        )
        if b'"type":"WorkspaceCreated"' in data:  # a workspace's name is its id
            data = data.replace(b'"name":"' + self.ws + b'"', b'"name":"' + self.new_ws + b'"')
        return data

    def token(self, text: str) -> str:
        return self.data(text.encode()).decode()

    def command(self, command: str) -> str:
        """A new command id (``Nats-Msg-Id`` stem): the seed's with its ids replaced, or with
        the copy's workspace added where it holds none, so that no copy is a duplicate."""
        new = self.token(command)
        return new if new != command else f"{command}.{self.new_ws.decode()}"

    def subject(self, subject: str) -> str:
        parts = subject.split(".")
        if parts[2] != self.ws.decode():
            raise ValueError(f"{subject} is not of workspace {self.ws.decode()}")
        parts[2] = self.new_ws.decode()
        return ".".join(self.token(p) for p in parts)


def _groups(events: list[RawEvent]) -> list[tuple[str, str, list[bytes]]]:
    """The seed's appends as they were made: consecutive events on one subject whose
    ``Nats-Msg-Id`` is ``<command id>:<i>`` with the same command id (one atomic batch)."""
    out: list[tuple[str, str, list[bytes]]] = []
    for e in events:
        command, _, index = e.msg_id.rpartition(":")
        if not command or not index.isdigit():
            raise ValueError(f"seq {e.seq}: msg id {e.msg_id!r} is not <command id>:<i>")
        if int(index) > 0 and out and out[-1][0] == e.subject and out[-1][1] == command:
            out[-1][2].append(e.data)
        else:
            out.append((e.subject, command, [e.data]))
    return out


async def _read_seed(conn: Connection) -> tuple[list[RawEvent], list[RawEvent]]:
    events: list[RawEvent] = []
    metrics: list[RawEvent] = []
    await read_in_order(conn, "cairn.ev.>", events.append)
    await read_in_order(conn, subjects.METRICS_ALL, metrics.append, stream=METRICS.name)
    # the audit service's checkpoints are its own, not the seed's: each copy gets its own
    events = [e for e in events if e.subject.split(".")[3] != subjects.AUDIT_KIND]
    return events, metrics


class _Copier:
    """Appends copies of the seed, pipelined: ``_WINDOW`` appends in flight, an aggregate's
    next append sent once its previous one has its sequence (the expected last sequence)."""

    def __init__(self, conn: Connection, events: list[RawEvent], metrics: list[RawEvent]) -> None:
        self.store = EventStore(conn)
        self.metrics_store = EventStore(conn, stream=METRICS.name)
        self.groups = _groups(events)
        self.metrics = metrics
        self.window = asyncio.Semaphore(_WINDOW)
        self.pending: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []

    async def _append(
        self,
        c: _Copy,
        subject: str,
        command: str,
        payloads: list[bytes],
        before: asyncio.Future[int] | None,
        done: asyncio.Future[int],
    ) -> None:
        try:
            expected = 0 if before is None else await before
            # stamped now, as a service stamps what it appends: the tracking service fails an
            # interactive run whose start is older than its heartbeat bound as lost
            now = datetime.now(UTC)
            envelopes = [
                msgspec.structs.replace(decode_envelope(c.data(p)), timestamp=now) for p in payloads
            ]
            msg_id = c.command(command)
            try:
                result = await self.store.append(
                    subject, envelopes, expected_seq=expected, msg_id=msg_id
                )
                # a duplicate is this append stored by an earlier attempt (the ids are fresh)
                seq = result.seq
            except ConcurrencyConflict:
                seq = await self._stored_already(subject, f"{msg_id}:{len(envelopes) - 1}")
            c.last_seq = max(c.last_seq, seq)
            done.set_result(seq)
        except BaseException as exc:
            self.failures.append(exc)
            done.cancel()
            raise
        finally:
            self.window.release()

    async def _stored_already(self, subject: str, msg_id: str) -> int:
        """After a conflict: where this append was stored by an earlier attempt whose answer
        was lost (a timeout on a loaded machine, then a retry that the CAS refuses), as a
        service would find it on reloading; anything else on the subject is an error."""
        last = await self.store.conn.js.get_last_msg(self.store.stream, subject)
        if (last.headers or {}).get("Nats-Msg-Id") != msg_id:
            found = decode_envelope(last.data).type if last.data else "nothing"
            raise RuntimeError(f"{subject}: seq {last.seq} is a {found}, not the copy's {msg_id}")
        return int(last.seq or 0)

    async def _publish_metrics(self, c: _Copy, m: RawEvent) -> None:
        try:
            # a duplicate is this batch stored by an earlier attempt (the ids are fresh)
            await self.metrics_store.publish(
                c.subject(m.subject), c.data(m.data), msg_id=c.command(m.msg_id)
            )
        except BaseException as exc:
            self.failures.append(exc)
            raise
        finally:
            self.window.release()

    async def _spawn(self, coro: Any) -> None:
        await self.window.acquire()
        task = asyncio.create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def copy(self, c: _Copy) -> None:
        """Send one copy: its events in the seed's order, its metric batches spread over them
        in the seed's proportion."""
        loop = asyncio.get_running_loop()
        last_on: dict[str, asyncio.Future[int]] = {}  # a copy's subjects are its own
        groups, metrics = self.groups, self.metrics
        mi = 0
        for gi, (subject, command, payloads) in enumerate(groups):
            if self.failures:
                raise self.failures[0]
            new_subject = c.subject(subject)
            done: asyncio.Future[int] = loop.create_future()
            before = last_on.get(new_subject)
            last_on[new_subject] = done
            await self._spawn(self._append(c, new_subject, command, payloads, before, done))
            while mi < len(metrics) and (gi + 1) * len(metrics) >= (mi + 1) * len(groups):
                await self._spawn(self._publish_metrics(c, metrics[mi]))
                mi += 1
        for m in metrics[mi:]:
            await self._spawn(self._publish_metrics(c, m))

    async def finish(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending)
        if self.failures:
            raise self.failures[0]


async def synthesize(
    settings: Settings, service: Settings, target: int, seed: int, concurrency: int
) -> dict[str, Any]:
    """The seed through the services (:func:`generate`), then copies of it until EVENTS holds
    ``target`` events, then the audit service's chain over all of them (module docstring)."""
    out: dict[str, Any] = {}
    out.update(await generate(settings, seed, concurrency))
    out["seed_generate_s"] = out.pop("generate_s")
    conn = await connect(service)
    try:
        events, metrics = await _read_seed(conn)
        have = await _last(conn, "EVENTS")
        copies = max(0, -(-(target - have) // len(events)))
        out.update(seed_events=len(events), seed_metric_batches=len(metrics), copies=copies)
        copier = _Copier(conn, events, metrics)
        t0 = time.perf_counter()
        made = [_Copy(settings.workspace, index) for index in range(1, copies + 1)]
        for c in made:
            await copier.copy(c)
        await copier.finish()
        took = time.perf_counter() - t0
        out["copy_s"] = round(took, 1)
        out["copy_per_s"] = round(copies * (len(events) + len(metrics)) / took) if took else None
        t0 = time.perf_counter()
        await _audit_caught_up(conn, [(c.new_ws.decode(), c.last_seq) for c in made])
        out["audit_catch_up_s"] = round(time.perf_counter() - t0, 1)
    finally:
        await conn.close()
    return out


async def _audit_caught_up(
    conn: Connection, workspaces: list[tuple[str, int]], timeout_s: float = 3600
) -> None:
    """Wait until the audit service's last checkpoint of every copy's workspace covers that
    workspace's last event (its chain is what verification checks)."""
    deadline = time.monotonic() + timeout_s
    todo = dict(workspaces)
    while todo:
        for ws, last in list(todo.items()):
            try:
                msg = await conn.js.get_last_msg(EVENTS.name, subjects.audit_chain(ws))
            except NotFoundError:
                break
            checkpoint = decode_envelope(msg.data or b"").data
            if not isinstance(checkpoint, ChainCheckpointed):
                raise RuntimeError(f"{ws}'s audit chain holds a {type(checkpoint).__name__}")
            if checkpoint.up_to_seq < last:
                break
            del todo[ws]
        if todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the audit service has not chained {len(todo)} workspaces")
            await asyncio.sleep(2)


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
    if "copies" in r:
        print(
            f"  synthesized: a seed of {r['seed_events']:,} events and"
            f" {r['seed_metric_batches']:,} batches ({r['runs']:,} runs) through the services"
            f" in {r['seed_generate_s']} s, {r['copies']} copies appended in {r['copy_s']} s"
            f" ({r['copy_per_s']:,}/s), the audit chain caught up {r['audit_catch_up_s']} s after"
        )
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
        if args.home is None and args.synthesize:
            r.update(
                await synthesize(
                    settings,
                    embedded_service_settings(settings),
                    args.events,
                    args.seed_events,
                    args.concurrency,
                )
            )
            r["generate_s"] = round(r["seed_generate_s"] + r["copy_s"] + r["audit_catch_up_s"], 1)
        elif args.home is None:
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
        "--synthesize",
        action="store_true",
        help="generate --seed-events through the services, then copy them up to --events",
    )
    parser.add_argument("--seed-events", type=int, default=20_000)
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
