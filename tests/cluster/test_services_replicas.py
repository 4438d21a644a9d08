"""Every service as ``cairn serve`` processes, two replicas of each, and agents as ``cairn
agent`` processes, under a workload of 200 small jobs, pipelines, a sweep and a schedule
submitted through the SDK: nothing is started twice and every run ends exactly once, with
every replica alive and with one replica of each service killed (kill -9) mid-workload.

The checks read the event log (EVENTS, through ``cairn.bus.EventStore``), never timings. The
stack, the workload and the checks are shared with ``test_services_partition``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import sys
import textwrap
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, EventStore, connect
from cairn.embedded import NatsCluster, NatsServer
from cairn.embedded._auth import AGENT_USER, SERVICE_USER
from cairn.proto.commands import CreateWorkspace
from cairn.proto.events import (
    ChainCheckpointed,
    Event,
    PipelineEnded,
    PipelineStepEnded,
    PipelineStepReused,
    PipelineStepStarted,
    RunAssigned,
    RunCanceled,
    RunCompleted,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSubmitted,
    ScheduleFired,
    SweepEnded,
    TrialProposed,
    decode_envelope,
)
from cairn.proto.schedules import CronTrigger
from cairn.rpc import Client
from cairn.sdk import (
    AsyncWorkspace,
    HyperDriveConfig,
    RandomParameterSampling,
    ScriptRunConfig,
    choice,
    load_pipeline_file,
    submit_pipeline,
    uniform,
)
from cairn.sdk._jobs import build_submission, submit
from cairn.settings import Settings
from tests.cluster.processes import SERVICES, Processes, Spawned
from tests.cluster.proxy import Proxy
from tests.conftest import LEAKS_SOCKETS, settings_for
from tests.receiver import Receiver

__all__ = [
    "END",
    "LogView",
    "ServiceStack",
    "Workload",
    "check_exactly_once",
    "service_stack",
]

HERE = Path(__file__).parent
HOOK_SECRET = "a webhook secret of the cluster tests"
END = (RunCompleted, RunFailed, RunCanceled)

#: a no-op job that leaves one mark per execution (the marks folder is the test's, beside the
#: agents' homes: a job may write there)
NOOP = """\
import os, sys
with open(os.path.join(sys.argv[1], os.environ["CAIRN_RUN_ID"]), "a") as f:
    f.write(os.environ["CAIRN_ATTEMPT"] + "\\n")
"""

#: a pipeline of three steps, the last waiting for the first two
PIPELINE = """\
type: pipeline
experiment_name: pipes
settings:
  default_compute: local
jobs:
  a:
    command: echo a > ${{outputs.out}}/a.txt
    outputs:
      out: {}
  b:
    command: echo b > ${{outputs.out}}/b.txt
    outputs:
      out: {}
  c:
    command: cat ${{inputs.a}}/a.txt ${{inputs.b}}/b.txt
    inputs:
      a: ${{parent.jobs.a.outputs.out}}
      b: ${{parent.jobs.b.outputs.out}}
"""


class LogView:
    """The workspace's events on EVENTS, read forward from where the last look stopped:
    ``runs``, ``pipelines``, ``sweeps``, ``schedules`` and ``audit``, each aggregate id ->
    its events in stream order."""

    def __init__(self, store: EventStore, workspace: str) -> None:
        self.store, self.ws = store, workspace
        self.after = 0
        self.by_kind: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))

    async def refresh(self) -> LogView:
        while True:
            page = await self.store.page(f"cairn.ev.{self.ws}.>", after_seq=self.after, limit=512)
            for seq, subject, payload in page:
                kind, aggregate = subject.split(".")[3:5]
                self.by_kind[kind][aggregate].append(decode_envelope(payload).data)
                self.after = seq
            if len(page) < 512:
                return self

    @property
    def runs(self) -> dict[str, list[Event]]:
        return self.by_kind["run"]

    def ended(self, run_id: str) -> bool:
        return any(isinstance(e, END) for e in self.runs.get(run_id, []))


def _check_run(run_id: str, events: list[Event], requeues_allowed: bool) -> list[str]:
    """A run: created or submitted once, ended exactly once and completed; each attempt
    assigned once (1, 2, ... in order), started at most once, and only a requeue (a lost
    attempt) leads to the next."""
    problems = []
    kinds = Counter(type(e).__name__ for e in events)
    if kinds["RunSubmitted"] + kinds["RunCreated"] != 1:
        problems.append(f"run {run_id} created/submitted {dict(kinds)}")
    ends = [e for e in events if isinstance(e, END)]
    if len(ends) != 1 or not isinstance(ends[0], RunCompleted):
        problems.append(f"run {run_id} ended {ends}")
    if not any(isinstance(e, RunSubmitted) for e in events):
        return problems  # a parent run (pipeline, sweep): no attempts of its own
    assigned = [e.attempt for e in events if isinstance(e, RunAssigned)]
    started = Counter(e.attempt for e in events if isinstance(e, RunStarted))
    lost = [e.attempt for e in events if isinstance(e, RunRequeued)]
    if assigned != list(range(1, len(assigned) + 1)):
        problems.append(f"run {run_id} assigned attempts {assigned}")
    if any(n > 1 for n in started.values()):
        problems.append(f"run {run_id} started twice: {dict(started)}")
    if lost != assigned[:-1]:
        problems.append(f"run {run_id}: attempts {assigned}, requeued {lost}")
    if lost and not requeues_allowed:
        problems.append(f"run {run_id} requeued {lost} with every agent alive")
    return problems


def _check_managers(view: LogView) -> list[str]:
    """Pipelines start each step once and end once, completed; sweeps propose each trial
    once and end once; schedules fire each due time once, each with a run of its own."""
    problems = []
    for pid, events in view.by_kind["pipeline"].items():
        steps = Counter(
            e.step for e in events if isinstance(e, PipelineStepStarted | PipelineStepReused)
        )
        step_ends = Counter(e.step for e in events if isinstance(e, PipelineStepEnded))
        ends = [e.status for e in events if isinstance(e, PipelineEnded)]
        if any(n != 1 for n in steps.values()) or steps != step_ends or ends != ["Completed"]:
            problems.append(f"pipeline {pid}: steps {steps}, step ends {step_ends}, ends {ends}")
    for sid, events in view.by_kind["sweep"].items():
        trials = Counter(e.index for e in events if isinstance(e, TrialProposed))
        ended = [e for e in events if isinstance(e, SweepEnded)]
        if any(n != 1 for n in trials.values()) or len(ended) != 1:
            problems.append(f"sweep {sid}: trials proposed {trials}, ended {ended}")
    for name, events in view.by_kind["schedule"].items():
        fires = [(e.due, e.run_id) for e in events if isinstance(e, ScheduleFired)]
        due, runs = Counter(d for d, _ in fires), Counter(r for _, r in fires)
        if any(n != 1 for n in [*due.values(), *runs.values()]):
            problems.append(f"schedule {name} fired {fires}")
    return problems


def _checkpoints(view: LogView) -> tuple[list[tuple[int, int]], list[str]]:
    """The audit checkpoints' windows, which never cover a sequence twice."""
    covered = sorted(
        (e.from_seq, e.up_to_seq)
        for events in view.by_kind["audit"].values()
        for e in events
        if isinstance(e, ChainCheckpointed)
    )
    overlaps = [f"{a} and {b}" for a, b in itertools.pairwise(covered) if b[0] <= a[1]]
    return covered, [f"audit checkpoints overlap: {o}" for o in overlaps]


def check_exactly_once(view: LogView, *, requeues_allowed: bool) -> dict[str, int]:
    """Every run, pipeline, sweep, schedule and audit checkpoint of the workspace checked
    from its events (``_check_run``, ``_check_managers``, ``_checkpoints``); returns counts
    for the report."""
    problems = []
    for run_id, events in view.runs.items():
        problems += _check_run(run_id, events, requeues_allowed)
    problems += _check_managers(view)
    covered, overlaps = _checkpoints(view)
    problems += overlaps
    assert not problems, "\n".join(problems[:40])
    return {
        "runs": len(view.runs),
        "requeued": sum(isinstance(e, RunRequeued) for ev in view.runs.values() for e in ev),
        "pipelines": len(view.by_kind["pipeline"]),
        "sweeps": len(view.by_kind["sweep"]),
        "fires": sum(
            isinstance(e, ScheduleFired) for ev in view.by_kind["schedule"].values() for e in ev
        ),
        "checkpoints": len(covered),
    }


@dataclass
class ServiceStack:
    """A server (or a cluster of ``nodes``), its services as processes, agents as
    processes, a workspace, a person's SDK session on it and a service connection that reads
    the log."""

    root: Path
    settings: dict[str, object]
    nodes: int = 1
    server: NatsServer | NatsCluster = field(init=False)
    procs: Processes = field(init=False)
    conn: Connection = field(init=False)  # as the services: pings, the log
    client_conn: Connection = field(init=False)
    ws: AsyncWorkspace = field(init=False)
    store: EventStore = field(init=False)
    proxies: dict[str, Proxy] = field(default_factory=dict)

    async def start(self, services: Iterable[str], proxied: Iterable[str] = ()) -> None:
        """Start a process per name in ``services`` (a name twice: two replicas, named
        ``<service>-1``, ``<service>-2``); those named in ``proxied`` reach the server through
        a :class:`Proxy` of their own (``self.proxies[name]``)."""
        if self.nodes == 1:
            self.server = NatsServer(self.root / "server", port=0)
        else:
            self.server = NatsCluster(self.root / "cluster", nodes=self.nodes)
        await self.server.start()
        self.procs = Processes(self.root, self.server, self.settings)
        (self.root / "marks").mkdir()  # before any agent: jobs write there
        service = self.settings_as(service=True, request_timeout=5.0)
        self.conn = await connect(service)
        self.store = EventStore(self.conn)
        seen: Counter[str] = Counter()
        spawned = []
        for name in services:
            seen[name] += 1
            replica = f"{name}-{seen[name]}"
            url = await self._proxy(replica) if replica in proxied else None
            spawned.append(await self.procs.serve(name, replica, nats_url=url))
        await self.procs.wait_serving(self.conn, spawned, timeout=240)
        client = self.settings_as(service=False, request_timeout=10.0)
        self.client_conn = await connect(client)
        name = "w" + uuid.uuid4().hex[:10]
        await Client(self.client_conn, name).send(
            CreateWorkspace(command_id=uuid.uuid4().hex, name=name)
        )
        self.ws = AsyncWorkspace(self.client_conn, name, client)

    def settings_as(self, *, service: bool, agent: bool = False, **extra: object) -> Settings:
        """Settings that connect as the services, as an agent, or as the local person."""
        if isinstance(self.server, NatsServer):
            return settings_for(self.server, service=service, agent=agent, **extra)
        creds = self.server.credentials
        if service:
            user, password = SERVICE_USER, creds.service_password
        elif agent:
            user, password = AGENT_USER, creds.agent_password
        else:
            user, password = creds.client_user, creds.client_password
        return msgspec.convert(
            {
                "home": str(self.server.folder),
                "nats_url": self.server.url,
                "nats_user": user,
                "nats_password": password,
                **extra,
            },
            Settings,
        )

    async def agent(self, name: str, slots: int, *, proxied: bool = False) -> Spawned:
        """An agent of the workspace, serving once this returns; ``proxied``: it reaches
        the server through a :class:`Proxy` of its own (``self.proxies[name]``)."""
        url = await self._proxy(name) if proxied else None
        made = await self.procs.agent(self.ws.name, name, slots=slots, nats_url=url)
        await self.procs.wait_serving(self.conn, [made], timeout=120)
        return made

    async def _proxy(self, name: str) -> str:
        # a cluster's clients learn the other nodes from the server and go around a proxy
        assert isinstance(self.server, NatsServer), "a proxy partitions from one server only"
        proxy = Proxy("127.0.0.1", self.server.port)
        await proxy.start()
        self.proxies[name] = proxy
        return proxy.url

    async def agents(self, count: int, slots: int) -> list[Spawned]:
        made = [
            await self.procs.agent(self.ws.name, f"agent-{n}", slots=slots)
            for n in range(1, count + 1)
        ]
        await self.procs.wait_serving(self.conn, made, timeout=120)
        return made

    async def close(self) -> None:
        if hasattr(self, "procs"):
            await self.procs.close()
        for proxy in self.proxies.values():
            await proxy.close()
        if hasattr(self, "ws"):
            await self.ws.close()
            await self.client_conn.close()
        if hasattr(self, "conn"):
            await self.conn.close()
        if hasattr(self, "server"):
            if isinstance(self.server, NatsServer):
                self.server.stop()
            else:
                self.server.kill()


@contextlib.asynccontextmanager
async def service_stack(
    root: Path,
    settings: dict[str, object],
    services: Iterable[str] = SERVICES * 2,
    proxied: Iterable[str] = (),
    nodes: int = 1,
) -> AsyncIterator[ServiceStack]:
    stack = ServiceStack(root, settings, nodes)
    try:
        await stack.start(services, proxied)
        yield stack
    finally:
        await stack.close()


@dataclass
class Workload:
    """``jobs`` no-op script jobs, ``pipelines`` three-step pipelines, a sweep of
    ``trials`` trials and a schedule firing every minute, all through the SDK."""

    stack: ServiceStack
    jobs: int
    pipelines: int = 3
    trials: int = 4
    seed: int = 0
    #: where a webhook on every ``RunCompleted`` of the workspace delivers
    receiver: Receiver | None = None
    job_ids: list[str] = field(default_factory=list)
    pipeline_ids: list[str] = field(default_factory=list)
    sweep_ids: list[str] = field(default_factory=list)
    schedule: str = "every-minute"

    @property
    def marks(self) -> Path:
        return self.stack.root / "marks"

    def _folder(self, name: str, files: dict[str, str]) -> Path:
        folder = self.stack.root / "src" / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            (folder / file).write_text(textwrap.dedent(text))
        return folder

    def _noop(self) -> ScriptRunConfig:
        src = self._folder("noop", {"job.py": NOOP})
        return ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(self.marks)])

    async def submit(self, parallel: int = 8) -> None:
        ws = self.stack.ws
        config = self._noop()
        if self.receiver is not None:
            await ws.webhooks.create(self.receiver.url, ["RunCompleted"], secret=HOOK_SECRET)
        await self._schedule(config)
        for n in range(self.pipelines):
            path = self._folder(f"pipeline{n}", {"pipeline.yml": PIPELINE}) / "pipeline.yml"
            self.pipeline_ids.append((await submit_pipeline(ws, load_pipeline_file(path))).run_id)
        if self.trials:
            src = self.stack.root / "src" / "sweep"
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy(HERE.parent / "sweeps" / "train.py", src / "train.py")
            sweep = HyperDriveConfig(
                run_config=ScriptRunConfig(source_directory=src, script="train.py"),
                hyperparameter_sampling=RandomParameterSampling(
                    {"learning_rate": uniform(0.01, 0.1), "n_estimators": choice(10, 50)},
                    seed=self.seed,
                ),
                primary_metric_name="AUC",
                primary_metric_goal="MAXIMIZE",
                max_total_runs=self.trials,
                max_concurrent_runs=2,
            )
            exp = await ws.experiment("sweeps")
            self.sweep_ids.append((await exp.submit(sweep)).id)
        gate = asyncio.Semaphore(parallel)

        async def one() -> str:
            async with gate:
                return await submit(ws, "jobs", config)

        self.job_ids = list(await asyncio.gather(*(one() for _ in range(self.jobs))))

    async def _schedule(self, config: ScriptRunConfig) -> None:
        """A schedule firing every minute (its first due time is the next minute)."""
        submission = await build_submission(self.stack.ws, "scheduled", config)
        trigger = CronTrigger(expression="* * * * *", start_time=datetime.now(UTC))
        await self.stack.ws.schedules.create(self.schedule, trigger, submission)

    async def wait(
        self, view: LogView, timeout: float, during: Callable[[LogView], Any] | None = None
    ) -> None:
        """Until every job, pipeline and sweep has ended and the schedule has fired at least
        once, with every fire's run ended (then the schedule is disabled); ``during`` is
        called with the view after each look (a test's faults)."""
        async with asyncio.timeout(timeout):
            while True:
                await view.refresh()
                if during is not None:
                    await during(view)
                if self._done(view):
                    break
                await asyncio.sleep(0.5)
            await self.stack.ws.schedules.disable(self.schedule)
            while True:  # a fire decided just before the disable ends too
                await view.refresh()
                if self._done(view):
                    return
                await asyncio.sleep(0.5)

    def _done(self, view: LogView) -> bool:
        fires = [
            e.run_id
            for events in view.by_kind["schedule"].values()
            for e in events
            if isinstance(e, ScheduleFired)
        ]
        parents = [*self.pipeline_ids, *self.sweep_ids]
        return bool(fires) and all(
            view.ended(r) for r in [*self.job_ids, *parents, *fires, *view.runs]
        )

    async def deliveries(self, view: LogView, timeout: float = 120) -> Counter[str]:
        """How many times the webhook delivered each run's completion (by run id), once
        every completion in the log has arrived at least once."""
        assert self.receiver is not None
        completed = {r for r, events in view.runs.items() if view.ended(r)}
        async with asyncio.timeout(timeout):
            while True:
                got: Counter[str] = Counter()
                for received in self.receiver.received:
                    for event in json.loads(received.body):
                        got[event["subject"].rpartition("/")[2]] += 1
                if completed <= got.keys():
                    return got
                self.receiver.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.receiver.changed.wait(), 1.0)

    def marks_of(self, run_id: str) -> list[str]:
        path = self.marks / run_id
        return path.read_text().split() if path.exists() else []


SEED = 20261130
#: leases long enough that a loaded machine (two cores, twenty-odd processes) never takes a
#: job back from a live agent; audit checkpoints every 100 events, so both audit replicas cut
#: windows during the workload
#: the three-node cluster in every run; the same workload on one server too with
#: CAIRN_SERVER_VARIANTS=1 (minutes more, and the cluster is the harder case)
NODES = [1, 3] if os.environ.get("CAIRN_SERVER_VARIANTS") == "1" else [3]

SETTINGS: dict[str, object] = {
    "job_lease_s": 15.0,
    "job_max_deliver": 5,
    "job_ticket_window": 16,
    "job_cancel_grace_s": 2.0,
    "audit_every_events": 100,
    "audit_every_s": 5.0,
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@LEAKS_SOCKETS
@pytest.mark.parametrize("nodes", NODES, ids=lambda n: "server" if n == 1 else "cluster")
async def test_two_replicas_of_every_service_run_200_jobs_each_once(
    tmp_path: Path, nats_py_leaks: None, nodes: int
) -> None:
    """On one server, and on a three-node cluster (R3 streams and buckets)."""
    async with (
        service_stack(tmp_path, SETTINGS, nodes=nodes) as stack,
        Receiver() as receiver,
    ):
        await stack.agents(2, slots=3)
        work = Workload(stack, jobs=200, seed=SEED, receiver=receiver)
        await work.submit()
        view = LogView(stack.store, stack.ws.name)
        await work.wait(view, timeout=600)
        counts = check_exactly_once(view, requeues_allowed=False)
        delivered = await work.deliveries(view)
        assert delivered == Counter(view.runs.keys()), "each completion delivered once"
        assert {r: work.marks_of(r) for r in work.job_ids} == {r: ["1"] for r in work.job_ids}
        dead = [(s.name, s.proc.returncode) for s in stack.procs.spawned if not s.alive]
        assert not dead, dead
        print("counts", counts)


@pytest.mark.slow
@pytest.mark.timeout(900)
@LEAKS_SOCKETS
@pytest.mark.parametrize("nodes", NODES, ids=lambda n: "server" if n == 1 else "cluster")
async def test_one_replica_of_each_service_killed_mid_workload_loses_and_doubles_nothing(
    tmp_path: Path, nats_py_leaks: None, nodes: int
) -> None:
    """Once the jobs are submitted, one replica of each service is killed (kill -9, in a
    seeded order), one each time five more jobs have ended: the survivors finish the
    workload. The pipelines' last steps and the sweep's trials queue behind the jobs, so
    their process managers lose a replica while they are still driving them."""
    async with (
        service_stack(tmp_path, SETTINGS, nodes=nodes) as stack,
        Receiver() as receiver,
    ):
        await stack.agents(2, slots=3)
        work = Workload(stack, jobs=200, seed=SEED, receiver=receiver)
        await work.submit()
        victims = [s for s in stack.procs.spawned if s.name.endswith("-1") and s.kind != "agent"]
        random.Random(SEED).shuffle(victims)
        killed: list[tuple[str, int, int]] = []  # who, jobs ended then, managed runs active
        first: list[int] = []

        async def kill_some(view: LogView) -> None:
            ended = sum(1 for r in work.job_ids if view.ended(r))
            first[:] = first or [ended]
            if victims and ended >= first[0] + 5 * len(killed):
                victim = victims.pop()
                await stack.procs.kill(victim)
                managed = [*work.pipeline_ids, *work.sweep_ids]
                active = sum(1 for r in managed if not view.ended(r))
                killed.append((victim.name, ended, active))

        view = LogView(stack.store, stack.ws.name)
        await work.wait(view, timeout=600, during=kill_some)
        assert len(killed) == len(SERVICES), killed
        assert all(ended < len(work.job_ids) for _, ended, _ in killed), killed
        counts = check_exactly_once(view, requeues_allowed=False)
        # at least once: a delivery in flight at the kill may be sent again by the survivor
        delivered = await work.deliveries(view)
        assert delivered.keys() == view.runs.keys()
        counts["webhook_repeats"] = delivered.total() - len(delivered)
        assert {r: work.marks_of(r) for r in work.job_ids} == {r: ["1"] for r in work.job_ids}
        alive = {s.kind for s in stack.procs.living()}
        assert alive == {*SERVICES, "agent"}, alive
        print("killed", killed, "counts", counts)


KEY_SCRIPT = """\
import os, sys, time
from cairn.audit._files import load_or_create_signing_key, public_key_hex
from cairn.settings import Settings
settings = Settings(home=sys.argv[1], keys_dir=sys.argv[2])
open(sys.argv[3] + f".{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.0005)
key = load_or_create_signing_key(settings)
print(public_key_hex(key.public_key()))
"""


async def test_audit_replicas_starting_together_share_one_signing_key(tmp_path: Path) -> None:
    """Replicas given one keys folder, started at once: one key is made, and every replica
    signs with it (before, each made its own and one of them crashed on the other's
    temporary file)."""
    keys, go = tmp_path / "keys", tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KEY_SCRIPT,
            str(tmp_path),
            str(keys),
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(6)
    ]
    async with asyncio.timeout(60):  # every process ready: then all make the key at once
        while sum(n.startswith("go.") for n in os.listdir(tmp_path)) < len(procs):
            await asyncio.sleep(0.05)
    go.touch()
    outs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err.decode()[-2000:] for _, err in outs]
    published = (keys / "audit.ed25519.pub").read_text().strip()
    assert {out.decode().strip() for out, _ in outs} == {published}
