"""Cluster benchmark: a 3-node R3 JetStream cluster beside a single node, on one machine.

In one run, the same workloads as the other benchmarks (imported from them, not copied) against
two stacks built the same way: nats-server(s) of a :class:`~cairn.embedded.NatsCluster` over a
temporary folder (1 node: a plain server, the config ``cairn up`` writes; 3 nodes: every
stream R3) and every service in one process of its own, as ``cairn up`` runs them:

* tracking (``bench/tracking.py``): metric points logged until queryable, runs with 10 tags
  created and completed per second, the per-call cost of ``run.log``;
* registry (``bench/registry.py``): model versions registered per second, 1 and 8 clients;
* jobs (``bench/jobs.py``): submit -> first output line p50, no-op jobs/s over 4 agents.

Then, on the cluster only, recovery from a leader kill, ``--rounds`` times: one client creates
runs one after another (a ``CreateRun`` command sent with the SDK's client: one command, one
acknowledgement, an outage raised rather than spooled) over every node's URL; the node that
leads the EVENTS stream is killed (SIGKILL). Recovery, the time from the kill to the first
acknowledgement of a command sent after it, is split in two:

* election: kill -> the stream's new leader, as ``$JS.API.STREAM.INFO`` names it, asked every
  ``PROBE_EVERY_S`` (each ask in flight on its own) over a connection to the surviving nodes
  only; nats-server's part, its RAFT election timeout (4-9 s, fixed in its code);
* retry: that moment -> the acknowledgement; Cairn's part (the service's and the client's
  retries, reconnects).

The commands invoked, acknowledged and present in the log (a ``RunCreated`` on the run's
subject, read from the stream) are counted. The node is restarted and the stream's replicas
are current before the next round.

Goals: R3 keeps at least half of the single node's throughput on this machine (all three
nodes share its cores and disk); recovery under 5 s with no acknowledged command lost (not
reachable while the election alone takes 4-9 s: the retry part is what Cairn controls).

    .venv/bin/python bench/cluster.py [--points 20000] [--versions 300] [--jobs 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cairn.embedded import ClusterNode, NatsCluster
from cairn.embedded._up import write_client_config
from cairn.errors import CairnError

STREAM = "EVENTS"
#: how often the election probe asks for the stream's leader after a kill
PROBE_EVERY_S = 0.02
#: what the services' process prints once every service is ready and the default workspace
#: exists
READY = "services ready"


def serve(home: str) -> None:
    """Every service in this process over ``home`` (its ``config.json`` and credentials), as
    ``cairn up`` runs them; the local person adopted and the default workspace made, then
    READY printed; SIGTERM stops it."""
    from cairn.embedded._auth import embedded_service_settings
    from cairn.embedded._up import _create_default, adopt_for_local_person, all_services
    from cairn.sdk import connect
    from cairn.service import install_stop_signals, run_services
    from cairn.settings import load_settings

    async def go() -> None:
        clients = load_settings(file=Path(home) / "config.json", home=home)
        stop, ready = asyncio.Event(), asyncio.Event()
        install_stop_signals(stop)
        services = asyncio.create_task(
            run_services(
                embedded_service_settings(clients),
                list(all_services().values()),
                stop=stop,
                ready=ready,
            )
        )
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([services, waiting], return_when=asyncio.FIRST_COMPLETED)
        if services.done():
            waiting.cancel()
            await services  # raises what stopped it
        await adopt_for_local_person(clients)
        async with connect(clients) as ws:
            await _create_default(ws)
        print(READY, flush=True)
        await services

    asyncio.run(go())


@dataclass(frozen=True)
class StackView:
    """What a workload in another process needs of a stack (``bench/jobs.py``'s ``Stack``)."""

    home: Path
    services_pid: int
    servers: tuple[int, ...]

    def server_pids(self) -> list[int]:
        return list(self.servers)


class ServedStack:
    """``nodes`` nats-servers over a temporary folder, every service in one process."""

    def __init__(self, nodes: int) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"cairn-bench-{nodes}n-"))
        self.cluster = NatsCluster(self.home, nodes=nodes)
        self.proc: subprocess.Popen[str] | None = None
        asyncio.run(self.cluster.start(timeout=120))
        write_client_config(self.home / "config.json", self.cluster.settings())
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f" from cluster import serve; serve({str(self.home)!r})"
        )
        env = {
            **os.environ,
            "CAIRN_HOME": str(self.home),
            "CAIRN_LOG_FORMAT": "json",
            "CAIRN_LOG_LEVEL": "warning",
        }
        with open(self.home / "services.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == READY:  # what it prints from now on goes on into its log
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise RuntimeError(f"the services did not start: see {self.home / 'services.log'}")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.home / "services.log", "a") as log:
            for line in self.proc.stdout:
                log.write(line)

    def view(self) -> StackView:
        assert self.proc is not None
        pids = tuple(n.pid for n in self.cluster.nodes if n.pid is not None)
        return StackView(self.home, self.proc.pid, pids)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.cluster.stop()


def _tracking(view: StackView, points: int, calls: int, runs: int) -> dict[str, Any]:
    import tracking
    from cairn.sdk import Workspace

    return tracking.cairn_workload(
        Workspace.from_config(view.home / "config.json"), points, calls, runs
    )


def _registry(view: StackView, versions: int) -> dict[str, Any]:
    import registry

    return registry.cairn_workload(view.home, versions)


def _jobs(view: StackView, latency_jobs: int, jobs: int) -> dict[str, Any]:
    import jobs as jobs_bench

    return asyncio.run(jobs_bench.measure(view, latency_jobs, jobs, headline=True))


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    """Each workload in a process of its own: none pays for another's heap."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def workloads(stack: ServedStack, args: argparse.Namespace) -> dict[str, Any]:
    view = stack.view()
    r: dict[str, Any] = {}
    t0 = time.perf_counter()
    r.update(_in_fresh_process(_tracking, view, args.points, args.calls, args.runs))
    r.update(_in_fresh_process(_registry, view, args.versions))
    r.update(_in_fresh_process(_jobs, view, args.latency_jobs, args.jobs))
    r["workloads_s"] = time.perf_counter() - t0
    return r


@dataclass
class Round:
    """One leader kill: what the client saw, and what the log holds."""

    leader: str
    new_leader: str = ""
    replicas: int = 0
    invoked: int = 0
    acknowledged: int = 0
    failed: int = 0
    present: int = 0
    recovery_s: float = float("nan")
    #: kill -> the new leader named by STREAM.INFO (nats-server's election)
    election_s: float = float("nan")
    #: the new leader named -> the first acknowledgement after it (Cairn's retry)
    retry_s: float = float("nan")
    in_flight_s: float = float("nan")
    errors: dict[str, int] | None = None


async def _commands(
    exp: Any,
    stop: asyncio.Event,
    done: list[tuple[float, float, str]],
    errors: dict[str, int],
    kill: tuple[list[float], asyncio.Event],
) -> int:
    """Runs created one after another until ``stop``: each acknowledged command's times
    (invoked, acknowledged) and run id in ``done``, each failure counted by its type; the
    event of ``kill`` set by the first acknowledgement of a command invoked after the time
    it holds (once the kill is made); returns the commands invoked."""
    from cairn.proto.commands import CreateRun
    from cairn.sdk._session import new_id

    invoked = 0
    while not stop.is_set():
        invoked += 1
        t0 = time.perf_counter()
        run_id = new_id()
        cmd = CreateRun(
            command_id=new_id(), run_id=run_id, experiment_name=exp.name, display_name=f"r{invoked}"
        )
        try:
            # the session's client, not the outbox: a command it spools is not acknowledged
            await exp.workspace.send(cmd)
        except (CairnError, TimeoutError) as exc:  # counted: the next command follows
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            continue
        done.append((t0, time.perf_counter(), run_id))
        killed, recovered = kill
        if killed and t0 >= killed[0]:
            recovered.set()
    return invoked


async def _one_round(
    cluster: NatsCluster, ws: Any, store: Any, index: int, warmup: int, after_s: float
) -> Round:
    exp = await ws.experiment(f"failover-{index}")
    done: list[tuple[float, float, str]] = []
    errors: dict[str, int] = {}
    stop = asyncio.Event()
    killed: list[float] = []
    recovered = asyncio.Event()
    client = asyncio.create_task(_commands(exp, stop, done, errors, (killed, recovered)))
    while len(done) < warmup:
        if client.done():
            await client  # raises what stopped it
            raise RuntimeError("the client stopped before the kill")
        await asyncio.sleep(0.01)
    leader: ClusterNode = await cluster.stream_leader(STREAM)
    probe = await _probe(cluster, leader)
    try:
        killed_at = time.perf_counter()
        leader.kill()
        killed.append(killed_at)
        elected_at = await asyncio.wait_for(_new_leader(probe, leader.name), 120)
    finally:
        await probe.close()
    await asyncio.wait_for(recovered.wait(), 120)
    # the first command invoked after the kill that is acknowledged: the recovery; the
    # command in flight at the kill may be acknowledged sooner (its append already stored)
    first = min((at for t0, at, _ in done if t0 >= killed_at), default=float("nan"))
    in_flight = min((at for _, at, _ in done if at > killed_at), default=float("nan"))
    await asyncio.sleep(after_s)  # commands keep coming through the new leader
    stop.set()
    invoked = await client
    result = Round(
        leader=leader.name,
        invoked=invoked,
        acknowledged=len(done),
        failed=sum(errors.values()),
        recovery_s=first - killed_at,
        election_s=elected_at - killed_at,
        retry_s=first - elected_at,
        in_flight_s=in_flight - killed_at,
        errors=errors,
    )
    result.new_leader = (await cluster.stream_leader(STREAM)).name
    await leader.start(timeout=60)
    await cluster.wait_ready(120)
    info = await cluster.wait_current(STREAM, 120)
    result.replicas = int(info["config"].get("num_replicas", 1))
    for _, _, run_id in done:
        events = await store.read(f"cairn.ev.{ws.name}.run.{run_id}")
        result.present += any(r.envelope.type == "RunCreated" for r in events)
    return result


async def _probe(cluster: NatsCluster, leader: ClusterNode) -> Any:
    """A connection (service user) to the nodes other than ``leader`` only."""
    from cairn.bus import connect as connect_bus
    from cairn.embedded._auth import SERVICE_USER

    survivors = [n for n in cluster.nodes if n is not leader]
    settings = cluster.settings(user=SERVICE_USER, nodes=survivors, request_timeout=2.0)
    return await connect_bus(settings, name="bench-election-probe")


async def _new_leader(conn: Any, old: str) -> float:
    """When ``$JS.API.STREAM.INFO`` first names a leader of the stream other than ``old``
    (the time its answer came): asked every ``PROBE_EVERY_S``, each ask in flight on its own
    (an ask during the election may go unanswered for its whole timeout)."""
    found: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def ask() -> None:
        try:
            msg = await conn.nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=1.0)
        except Exception:  # no answer during the election: the next ask follows
            return
        at = time.perf_counter()
        leader = (json.loads(msg.data).get("cluster") or {}).get("leader")
        if leader and leader != old and not found.done():
            found.set_result(at)

    asks: set[asyncio.Task[None]] = set()
    try:
        while not found.done():
            task = asyncio.create_task(ask())
            asks.add(task)
            task.add_done_callback(asks.discard)
            await asyncio.wait([found], timeout=PROBE_EVERY_S)
        return found.result()
    finally:
        for task in list(asks):
            task.cancel()
        await asyncio.gather(*asks, return_exceptions=True)


async def recovery(stack: ServedStack, rounds: int, warmup: int, after_s: float) -> list[Round]:
    from cairn.bus import EventStore
    from cairn.bus import connect as connect_bus
    from cairn.embedded._auth import SERVICE_USER
    from cairn.sdk import connect

    cluster = stack.cluster
    reader = await connect_bus(cluster.settings(user=SERVICE_USER), name="bench-log-reader")
    out = []
    try:
        async with connect(cluster.settings()) as ws:
            for index in range(rounds):
                out.append(
                    await _one_round(cluster, ws, EventStore(reader), index, warmup, after_s)
                )
    finally:
        await reader.close()
    return out


#: (label, key, higher is better): the headline figures of each workload
ROWS = [
    ("tracking: points until queryable (pts/s)", "ingest_points_per_s", True),
    ("tracking: runs with 10 tags (runs/s)", "runs_per_s", True),
    ("tracking: log call, median (µs)", "log_call_median_us", False),
    ("registry: versions/s, 1 client", "versions_per_s_1", True),
    ("registry: versions/s, 8 clients", "versions_per_s_8", True),
    ("jobs: submit -> first line, p50 (ms)", "job_p50_ms", False),
    ("jobs: no-op jobs/s, 4 agents", "jobs_per_s", True),
]


def report(single: dict[str, Any], r3: dict[str, Any], rounds: list[Round]) -> bool:
    """The table; True when every goal is met."""
    print(f"{'':<44} {'1 node':>10} {'R3':>10} {'R3 keeps':>9}")
    kept = []
    for label, key, higher in ROWS if single else []:
        s, c = single[key], r3[key]
        share = c / s if higher else s / c
        kept.append(share)
        print(f"{label:<44} {s:>10,.1f} {c:>10,.1f} {share:>8.0%}")
    if single:
        print(
            f"{'duplicates (registry, 8 clients)':<44} {single['duplicates_8']:>10}"
            f" {r3['duplicates_8']:>10}"
        )
    print()
    print(
        f"{'round':<6} {'killed':<7} {'new':<4} {'R':>2} {'recovery (s)':>12}"
        f" {'election (s)':>12} {'retry (s)':>9}"
        f" {'in flight (s)':>13} {'invoked':>8} {'acked':>6} {'failed':>7} {'acked in log':>13}"
        "  errors"
    )
    for i, r in enumerate(rounds):
        print(
            f"{i:<6} {r.leader:<7} {r.new_leader:<4} {r.replicas:>2} {r.recovery_s:>12.2f}"
            f" {r.election_s:>12.2f} {r.retry_s:>9.2f}"
            f" {r.in_flight_s:>13.2f} {r.invoked:>8} {r.acknowledged:>6} {r.failed:>7}"
            f" {r.present:>13}  {r.errors or ''}"
        )
    if rounds:
        for label, values in (
            ("recovery", [r.recovery_s for r in rounds]),
            ("election (nats-server)", [r.election_s for r in rounds]),
            ("retry (Cairn)", [r.retry_s for r in rounds]),
        ):
            print(
                f"{label:<24} min {min(values):.2f}  median {statistics.median(values):.2f}"
                f"  max {max(values):.2f} s"
            )
    worst = max((r.recovery_s for r in rounds), default=float("nan"))
    lost = sum(r.acknowledged - r.present for r in rounds)
    throughput_ok = min(kept, default=1.0) >= 0.5
    recovery_ok = worst < 5.0 and lost == 0
    print()
    print(
        f"R3 keeps {min(kept, default=float('nan')):.0%} at worst"
        f" (goal >= 50%: {'met' if throughput_ok else 'NOT met'});"
        f" recovery {worst:.2f} s at worst, {lost} acknowledged lost"
        f" (goal < 5 s, 0 lost: {'met' if recovery_ok else 'NOT met'})"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    return throughput_ok and recovery_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000, help="tracking: metric points")
    parser.add_argument("--calls", type=int, default=1000, help="tracking: timed log calls")
    parser.add_argument("--runs", type=int, default=50, help="tracking: runs with 10 tags")
    parser.add_argument("--versions", type=int, default=300, help="registry: versions per case")
    parser.add_argument("--latency-jobs", type=int, default=30, help="jobs: one at a time")
    parser.add_argument("--jobs", type=int, default=200, help="jobs: over 4 agents")
    parser.add_argument("--rounds", type=int, default=5, help="leader kills")
    parser.add_argument("--warmup", type=int, default=20, help="acks before each kill")
    parser.add_argument("--after-s", type=float, default=2.0, help="commands after recovery")
    parser.add_argument(
        "--recovery-only", action="store_true", help="only the leader kills (no workloads)"
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the start: {load}", flush=True)
    results: dict[str, Any] = {}
    rounds: list[Round] = []
    for nodes in (3,) if args.recovery_only else (1, 3):
        stack = ServedStack(nodes)
        try:
            if not args.recovery_only:
                results[f"{nodes}n"] = workloads(stack, args)
                print(f"{nodes} node(s): {json.dumps(results[f'{nodes}n'])}", flush=True)
            if nodes == 3:
                rounds = asyncio.run(recovery(stack, args.rounds, args.warmup, args.after_s))
        finally:
            stack.stop()
    ok = report(results.get("1n", {}), results.get("3n", {}), rounds)
    print(
        json.dumps(
            {
                **results,
                "rounds": [vars(r) for r in rounds],
                "args": vars(args),
                "load_at_start": load,
                "load_at_end": os.getloadavg(),
            }
        )
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
