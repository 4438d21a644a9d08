"""The checker of a workload's history (:mod:`tests.cluster.workload`) against the log and the
read models, after whatever faults the cluster went through.

It reads the workspace's events from EVENTS and its metric batches from METRICS (through
:class:`cairn.bus.EventStore`, as every reader of the log does) and finds:

* an acknowledged command whose events are not in the log, or are there twice (two messages
  with one ``Nats-Msg-Id``, or two appends caused by one command), or whose reply named a
  sequence other than the one its (last) event is stored at;
* an acknowledged metric batch that METRICS does not hold, or holds twice;
* a version number of a model or a dataset given twice, or skipped, and an acknowledged
  registration whose version (as its client read it back) is not its event's;
* a job whose submission was acknowledged that did not end, or ended more than once; any run
  with two ends;
* a read model that differs from a replay of the log to its own position (each service
  compares its live read models with a replay beside them: ``cairn replay --verify``,
  :func:`cairn.projection.verify_read_models`, over the projection content hashes), or that
  has set events aside.

:class:`Report` lists what is wrong, one readable line each; ``report.ok`` when nothing is.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cairn.bus import Connection, EventStore, Stored
from cairn.proto.events import (
    AssetRegistered,
    ModelVersionRegistered,
    RunCanceled,
    RunCompleted,
    RunFailed,
    decode_envelope,
)
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import EVENTS, METRICS
from tests.cluster.workload import History

__all__ = ["Logged", "Report", "check", "read_log", "wait_for_jobs"]

#: commands that always append at least one event when they succeed (the checker requires
#: their events); others (creating an experiment that exists) may succeed by appending none
MUST_APPEND = {
    "CreateRun",
    "StartRun",
    "CompleteRun",
    "RegisterModelVersion",
    "RegisterDataset",
    "SubmitJob",
}
ENDS = (RunCompleted, RunFailed, RunCanceled)
_metrics_decoder = msgspec.json.Decoder(MetricsLogged)


@dataclass
class Event:
    seq: int
    subject: str
    msg_id: str
    kind: str
    aggregate_id: str
    causation_id: str
    data: Any


@dataclass
class Logged:
    """A workspace's log as read back: its events, and its metric batches by batch id."""

    events: list[Event]
    batches: dict[str, list[int]]

    def by_cause(self) -> dict[str, list[Event]]:
        caused: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            caused[event.causation_id].append(event)
        return caused


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def __str__(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in self.facts.items())
        if self.ok:
            return f"history checked, nothing wrong ({head})"
        shown = self.problems[:40]
        more = len(self.problems) - len(shown)
        lines = [f"{len(self.problems)} problem(s) ({head}):", *(f"  - {p}" for p in shown)]
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


async def read_log(conn: Connection, workspace: str) -> Logged:
    """Every event and metric batch of ``workspace``, as the streams hold them now."""
    events_store = EventStore(conn, stream=EVENTS.name)
    stored = await events_store.read_stored(f"cairn.ev.{workspace}.>")
    events = [_event(m) for m in stored]
    metrics_store = EventStore(conn, stream=METRICS.name)
    batches: dict[str, list[int]] = defaultdict(list)
    for m in await metrics_store.read_stored(f"cairn.metrics.{workspace}.>"):
        batches[_metrics_decoder.decode(m.data).batch_id].append(m.seq)
    return Logged(events, dict(batches))


def _event(m: Stored) -> Event:
    env = decode_envelope(m.data)
    return Event(
        m.seq,
        m.subject,
        m.msg_id,
        env.aggregate_kind,
        env.aggregate_id,
        env.causation_id,
        env.data,
    )


def run_ends(logged: Logged) -> dict[str, list[Event]]:
    ends: dict[str, list[Event]] = defaultdict(list)
    for event in logged.events:
        if event.kind == "run" and isinstance(event.data, ENDS):
            ends[event.aggregate_id].append(event)
    return ends


async def wait_for_jobs(
    conn: Connection, workspace: str, history: History, timeout: float
) -> list[str]:
    """Until every job whose submission was acknowledged has ended in the log (polling the
    log, bounded); the run ids of those that have not."""
    deadline = time.monotonic() + timeout
    while True:
        ends = run_ends(await read_log(conn, workspace))
        left = sorted(r for r in history.jobs if r not in ends)
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.5)


async def check(
    conn: Connection,
    workspace: str,
    history: History,
    *,
    read_models: bool = True,
    verify_timeout: float = 120.0,
) -> Report:
    """Everything this module's docstring lists, for ``history`` of ``workspace``."""
    report = Report()
    logged = await read_log(conn, workspace)
    report.facts = {
        "events": len(logged.events),
        "metric_batches": len(logged.batches),
        "acknowledged": len(history.acked),
        "invoked": len(history.invoked),
    }
    _check_duplicates(logged, report)
    _check_acknowledged(logged, history, report)
    _check_metrics(logged, history, report)
    _check_versions(logged, history, report)
    _check_jobs(logged, history, report)
    if read_models:
        await _check_read_models(conn, report, verify_timeout)
    return report


def _check_duplicates(logged: Logged, report: Report) -> None:
    ids = Counter(e.msg_id for e in logged.events if e.msg_id)
    for msg_id, n in sorted(ids.items()):
        if n > 1:
            seqs = [e.seq for e in logged.events if e.msg_id == msg_id]
            report.add(f"Nats-Msg-Id {msg_id} is stored {n} times (seqs {seqs})")


def _check_acknowledged(logged: Logged, history: History, report: Report) -> None:
    caused = logged.by_cause()
    for command_id, ack in sorted(history.acked.items(), key=lambda kv: kv[1].seq):
        if ack.kind == "LogMetrics":
            continue
        events = caused.get(command_id, [])
        what = f"{ack.kind} {command_id} (acknowledged at seq {ack.seq})"
        if not events:
            if ack.kind in MUST_APPEND:
                report.add(f"{what} is not in the log")
            continue
        appends = Counter(e.msg_id.rpartition(":")[0] if e.msg_id else "" for e in events)
        positions = Counter(e.msg_id for e in events)
        if len(appends) > 1 or any(n > 1 for n in positions.values()):
            seqs = [(e.seq, e.msg_id) for e in events]
            report.add(f"{what} took effect more than once: {seqs}")
        last = max(e.seq for e in events)
        if ack.seq != last:
            report.add(f"{what}: its reply said seq {ack.seq}, its last event is at seq {last}")


def _check_metrics(logged: Logged, history: History, report: Report) -> None:
    for command_id, ack in sorted(history.acked.items()):
        if ack.kind != "LogMetrics":
            continue
        seqs = logged.batches.get(command_id, [])
        if not seqs:
            report.add(f"metric batch {command_id} (acknowledged at METRICS seq {ack.seq}) is lost")
        elif len(seqs) > 1:
            report.add(f"metric batch {command_id} is stored {len(seqs)} times: {seqs}")
        elif seqs[0] != ack.seq:
            report.add(f"metric batch {command_id}: reply said seq {ack.seq}, stored at {seqs[0]}")
    for batch, seqs in sorted(logged.batches.items()):
        if len(seqs) > 1 and batch not in history.acked:
            report.add(f"metric batch {batch} (not acknowledged) is stored {len(seqs)} times")


def _versions(logged: Logged) -> dict[tuple[str, str], list[tuple[int, Event]]]:
    """Version numbers given, per model or dataset (kind, name)."""
    given: dict[tuple[str, str], list[tuple[int, Event]]] = defaultdict(list)
    for event in logged.events:
        data = event.data
        if isinstance(data, ModelVersionRegistered):
            given[("model", data.name)].append((data.version, event))
        elif isinstance(data, AssetRegistered) and event.kind == "dataset":
            given[("dataset", data.name)].append((data.version, event))
    return given


def _check_versions(logged: Logged, history: History, report: Report) -> None:
    given = _versions(logged)
    for (kind, name), versions in sorted(given.items()):
        numbers = Counter(v for v, _ in versions)
        for number, n in sorted(numbers.items()):
            if n > 1:
                seqs = [e.seq for v, e in versions if v == number]
                report.add(f"{kind} {name}: version {number} given {n} times (seqs {seqs})")
        expected = list(range(1, max(numbers, default=0) + 1))
        if sorted(numbers) != expected:
            missing = sorted(set(expected) - set(numbers))
            report.add(f"{kind} {name}: versions skipped: {missing}")
    caused = logged.by_cause()
    for command_id, ack in history.acked.items():
        if ack.version is None:
            continue
        mine = [
            e.data.version
            for e in caused.get(command_id, [])
            if isinstance(e.data, (ModelVersionRegistered, AssetRegistered))
        ]
        if mine and mine != [ack.version]:
            report.add(
                f"{ack.kind} {command_id}: its client read version {ack.version} back,"
                f" its event gave {mine}"
            )


def _check_jobs(logged: Logged, history: History, report: Report) -> None:
    ends = run_ends(logged)
    for run_id, events in sorted(ends.items()):
        if len(events) > 1:
            shown = [(e.seq, type(e.data).__name__) for e in events]
            report.add(f"run {run_id} ended {len(events)} times: {shown}")
    for run_id, command_id in sorted(history.jobs.items()):
        if run_id not in ends:
            report.add(f"job {run_id} (submitted by {command_id}, acknowledged) never ended")
    report.facts["jobs_ended"] = sum(1 for r in history.jobs if r in ends)


async def _caught_up(conn: Connection, timeout: float) -> list[str]:
    """Until every read model of every instance has applied its stream up to the stream's
    last sequence as of now (a read model that stopped following its stream after a fault
    would otherwise still equal its replay: at its own, old, position); those that have not."""
    from cairn.embedded._up import read_models
    from cairn.projection import read_model_states

    streams = {name: make().source.stream for name, make in read_models().items()}
    heads = {s: await EventStore(conn, stream=s).last_seq() for s in set(streams.values())}
    deadline = time.monotonic() + timeout
    while True:
        behind = [
            f"{s['read_model']} on {s['instance']} at seq {s['last_seq']} of"
            f" {heads[streams[s['read_model']]]}"
            for s in await read_model_states(conn, wait_s=1.0)
            if "read_model" in s
            and s["read_model"] in streams
            and s["last_seq"] < heads[streams[s["read_model"]]]
        ]
        if not behind or time.monotonic() >= deadline:
            return behind
        await asyncio.sleep(0.5)


async def _check_read_models(conn: Connection, report: Report, timeout: float) -> None:
    from cairn.projection import verify_read_models

    for behind in await _caught_up(conn, timeout / 2):
        report.add(f"read model {behind}: it stopped following the log")
    rows = await verify_read_models(conn, timeout=timeout)
    if not rows:
        report.add("no service answered the read models' verification")
    for row in rows:
        where = f"read model {row.get('read_model', '?')} on {row['instance']}"
        if "error" in row:
            report.add(f"{row['instance']}: verification failed: {row['error']}")
        elif not row["same"]:
            report.add(f"{where} differs from its replay: {row['difference']}")
        elif row.get("quarantined"):
            report.add(f"{where} set {row['quarantined']} event(s) aside")
    report.facts["read_models_verified"] = sum(1 for r in rows if r.get("same"))
