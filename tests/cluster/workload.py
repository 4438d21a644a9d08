"""A seeded workload of concurrent clients, through the SDK and its RPC client, that keeps a
history: every command invoked and, apart, every one acknowledged with what its reply said.

Each client is a user with a connection of its own. It picks operations from a seeded random
source until the workload's time is up: an interactive run (created, started, a few metric
batches, completed: the SDK's outbox spools what cannot be sent and sends it once the bus is
back), a model version registered (contended: every client registers the same few names), a
dataset version registered (contended too), a job submitted (an agent runs it). A command whose
reply did not come is sent again with the same command id, as the SDK's own retries do; a user
who gives up on it moves on, and the command stays "invoked, not acknowledged": it may or may
not have taken effect, and the checker (:mod:`tests.cluster.checker`) accepts either, once.

The history is observed at the RPC client (:class:`RecordingClient`), below every SDK call:
what the SDK sends on its own (spooled commands sent later, metric batches) is recorded too.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import Connection, connect
from cairn.errors import CairnError, Unavailable
from cairn.proto.assets import DataPath, DatasetSpec, DatastoreSpec
from cairn.proto.commands import Accepted, Command, Query, QueryResult, Reply
from cairn.proto.jobs import JobSpec, SubmitJob
from cairn.proto.registry import RegisterModelVersion
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings

__all__ = ["Ack", "Call", "History", "Invoked", "RecordingClient", "Workload"]

#: the names the clients contend for (versions of one name must never be given twice)
MODEL_NAMES = ("m-alpha", "m-beta")
DATASET_NAMES = ("d-rows",)
DATASTORE = "faultlake"
EXPERIMENT = "faults"
#: how many times a user sends one command again (same id) before giving up on it
USER_RETRIES = 4


@dataclass
class Invoked:
    """A command as sent: its type, the aggregate it names and when (monotonic seconds)."""

    command_id: str
    kind: str
    target: str
    at: float
    command: Command


@dataclass
class Ack:
    """A command's success reply: the stream sequence and aggregate it names, whether the
    service answered it as a repeat, and what the client learnt after (a version number)."""

    command_id: str
    kind: str
    seq: int
    aggregate_id: str
    replayed: bool
    at: float
    version: int | None = None


@dataclass
class Call:
    """One request of a client (a command or a query, the RPC client's own retries
    included): what it was, how long it took until its reply or its error, and that error's
    code (empty: answered)."""

    kind: str
    seconds: float
    error: str


@dataclass
class History:
    """What the clients did, as they saw it."""

    invoked: dict[str, Invoked] = field(default_factory=dict)
    acked: dict[str, Ack] = field(default_factory=dict)
    #: refusals and give-ups, per command id (error codes, in order)
    failures: dict[str, list[str]] = field(default_factory=dict)
    #: jobs whose submission was acknowledged: run id -> command id
    jobs: dict[str, str] = field(default_factory=dict)
    #: operations finished, by kind (for the report)
    done: dict[str, int] = field(default_factory=dict)
    #: every request the clients made (commands and queries), as it ended
    calls: list[Call] = field(default_factory=list)

    def invoke(self, cmd: Command) -> None:
        if cmd.command_id not in self.invoked:
            self.invoked[cmd.command_id] = Invoked(
                cmd.command_id, type(cmd).__name__, _target(cmd), time.monotonic(), cmd
            )

    def ack(self, cmd: Command, reply: Reply) -> None:
        if isinstance(reply, Accepted):
            self.acked.setdefault(
                cmd.command_id,
                Ack(
                    cmd.command_id,
                    type(cmd).__name__,
                    reply.seq,
                    reply.aggregate_id,
                    reply.replayed,
                    time.monotonic(),
                ),
            )
            if isinstance(cmd, SubmitJob):
                self.jobs[cmd.run_id] = cmd.command_id

    def fail(self, cmd: Command, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, CairnError) else type(exc).__name__
        self.failures.setdefault(cmd.command_id, []).append(code)

    def summary(self) -> str:
        kinds: dict[str, list[int]] = {}
        for op in self.invoked.values():
            kinds.setdefault(op.kind, [0, 0])[0] += 1
        for ack in self.acked.values():
            kinds.setdefault(ack.kind, [0, 0])[1] += 1
        parts = [f"{k} {a}/{i}" for k, (i, a) in sorted(kinds.items())]
        return "acknowledged/invoked: " + ", ".join(parts)


def _target(cmd: Command) -> str:
    for name in ("run_id", "name"):
        value = getattr(cmd, name, None)
        if isinstance(value, str):
            return value
    return ""


class RecordingClient(Client):
    """The SDK's RPC client, which writes every command it sends and every success reply it
    gets into a :class:`History`."""

    def __init__(self, conn: Connection, workspace: str, history: History) -> None:
        super().__init__(conn, workspace)
        self.history = history
        #: the latest success reply of each command type this client got
        self.last_ack: dict[str, Ack] = {}

    async def send(self, cmd: Command) -> Accepted:
        self.history.invoke(cmd)
        started = time.monotonic()
        try:
            reply = await super().send(cmd)
        except BaseException as exc:
            self.history.fail(cmd, exc)
            self._ended(type(cmd).__name__, started, exc)
            raise
        self._ended(type(cmd).__name__, started, None)
        self._acked(cmd, reply)
        return reply

    async def ask(self, q: Query) -> QueryResult:
        started = time.monotonic()
        try:
            result = await super().ask(q)
        except BaseException as exc:
            self._ended(type(q).__name__, started, exc)
            raise
        self._ended(type(q).__name__, started, None)
        return result

    def _ended(self, kind: str, started: float, exc: BaseException | None) -> None:
        error = "" if exc is None else exc.code if isinstance(exc, CairnError) else repr(exc)
        self.history.calls.append(Call(kind, time.monotonic() - started, error))

    def _acked(self, cmd: Command, reply: Reply) -> None:
        self.history.ack(cmd, reply)
        ack = self.history.acked.get(cmd.command_id)
        if ack is not None:
            self.last_ack[ack.kind] = ack

    async def send_any(self, cmd: Command) -> Reply:
        self.history.invoke(cmd)
        started = time.monotonic()
        try:
            reply = await super().send_any(cmd)
        except BaseException as exc:
            self.history.fail(cmd, exc)
            self._ended(type(cmd).__name__, started, exc)
            raise
        self._ended(type(cmd).__name__, started, None)
        self._acked(cmd, reply)
        return reply


def recording_workspace(
    conn: Connection, workspace: str, settings: Settings, history: History
) -> AsyncWorkspace:
    """An SDK workspace whose commands (sent at once or from the spool) are recorded."""
    ws = AsyncWorkspace(conn, workspace, settings)
    client = RecordingClient(conn, workspace, history)
    ws.client = client
    ws.outbox.client = client
    return ws


class Workload:
    """``clients`` users of workspace ``workspace`` for ``duration_s`` seconds, seeded.

    ``settings`` connect as a person who may create runs, register models and datasets and
    submit jobs in ``workspace``; ``lake`` is a folder the services may read as a datastore
    (under their ``datastore_roots``). :meth:`prepare` registers what the operations need
    (the datastore, a staged model file per client); :meth:`run` runs the operations.
    """

    def __init__(
        self,
        settings: Settings,
        workspace: str,
        *,
        seed: int,
        lake: Path,
        clients: int = 4,
        duration_s: float = 12.0,
        jobs: bool = True,
        job_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.seed = seed
        self.lake = lake
        self.clients = clients
        self.duration_s = duration_s
        self.jobs = jobs
        self.job_seconds = job_seconds
        self.history = History()
        self._staged: dict[int, str] = {}
        self.errors: list[str] = []

    # -- setup ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the workspace, the datastore the datasets read, and a staged model file
        per client, before any fault (these are not part of the history)."""
        self.lake.mkdir(parents=True, exist_ok=True)
        (self.lake / "part-0.csv").write_text("x,y\n1,2\n")
        conn = await connect(self.settings, name="cairn-workload-setup")
        try:
            ws = AsyncWorkspace(conn, self.workspace, self.settings)
            try:
                await ws.create()
                spec = DatastoreSpec(kind="local", path=str(self.lake))
                await ws.assets.register_datastore(DATASTORE, spec)
                model = self.lake.parent / "model.bin"
                model.write_bytes(b"weights " * 64)
                for i in range(self.clients):
                    staging, path = await ws.models.upload(model, show_progress=False)
                    self._staged[i] = f"{staging}/{path}"
                await ws.experiment(EXPERIMENT)
            finally:
                await ws.close()
        finally:
            await conn.close()

    # -- running --------------------------------------------------------------------------

    async def run(self) -> History:
        """Run every client until the time is up; each finishes its operation in flight
        (bounded), then closes (its spool sent, if the bus lets it in time)."""
        deadline = time.monotonic() + self.duration_s
        await asyncio.gather(*(self._client(i, deadline) for i in range(self.clients)))
        return self.history

    async def _client(self, index: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        home = self.lake.parent / f"client-{index}"
        settings = msgspec.structs.replace(self.settings, home=str(home))
        conn = await connect(settings, name=f"cairn-workload-{index}")
        ws = recording_workspace(conn, self.workspace, settings, self.history)
        ops = [self._run_op, self._model_op, self._dataset_op]
        weights = [4, 3, 2]
        if self.jobs:
            ops.append(self._job_op)
            weights.append(2)
        try:
            while time.monotonic() < deadline:
                op = rng.choices(ops, weights)[0]
                try:
                    await asyncio.wait_for(
                        op(ws, rng, index), max(deadline - time.monotonic(), 1) + 20
                    )
                except (CairnError, TimeoutError) as exc:
                    # a user who saw an error goes on with the next thing (what the command
                    # did, if anything, is the checker's to find)
                    self.errors.append(f"client {index} {op.__name__}: {exc!r}"[:300])
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                else:
                    name = op.__name__.strip("_").removesuffix("_op")
                    self.history.done[name] = self.history.done.get(name, 0) + 1
        finally:
            await ws.close(timeout=20)
            await conn.close()

    async def _send_retrying(self, ws: AsyncWorkspace, cmd: Command) -> Accepted:
        """Send ``cmd``; when no answer came (the client's own retries spent), send it again
        with the same id, as a user who runs the command again would."""
        for attempt in range(USER_RETRIES):
            try:
                return await ws.send(cmd)
            except Unavailable:
                if attempt == USER_RETRIES - 1:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _run_op(self, ws: AsyncWorkspace, rng: random.Random, index: int) -> None:
        exp = await ws.experiment(EXPERIMENT)
        run = await exp.create_run(display_name=f"c{index}")
        await run.start()
        for step in range(rng.randint(1, 3)):
            for _ in range(rng.randint(1, 5)):
                run.log("loss", rng.random(), step=step)
            await run.flush()
        await run.complete()

    async def _model_op(self, ws: AsyncWorkspace, rng: random.Random, index: int) -> None:
        staging, _, path = self._staged[index].partition("/")
        name = rng.choice(MODEL_NAMES)
        cmd = RegisterModelVersion(
            command_id=uuid.uuid4().hex,
            name=name,
            path=path,
            staging_id=staging,
            tags={"client": str(index)},
        )
        reply = await self._send_retrying(ws, cmd)
        record = await ws.models.get(name, as_of_seq=reply.seq)
        self.history.acked[cmd.command_id].version = int(record["version"])

    async def _dataset_op(self, ws: AsyncWorkspace, rng: random.Random, index: int) -> None:
        name = rng.choice(DATASET_NAMES)
        spec = DatasetSpec(kind="tabular", paths=[DataPath(DATASTORE, "*.csv")])
        # tags of its own: a version identical to the latest (spec and tags) is not made again
        tags = {"client": str(index), "op": uuid.uuid4().hex[:8]}
        record = await ws.datasets.register(name, spec, create_new_version=True, tags=tags)
        assert isinstance(ws.client, RecordingClient)
        ack = ws.client.last_ack.get("RegisterDataset")  # the command ``register`` sent
        if ack is not None:
            ack.version = int(record["version"])

    async def _job_op(self, ws: AsyncWorkspace, rng: random.Random, index: int) -> None:
        seconds = round(rng.uniform(0.1, self.job_seconds), 2)
        cmd = SubmitJob(
            command_id=uuid.uuid4().hex,
            run_id=uuid.uuid4().hex,
            experiment_name=EXPERIMENT,
            job=JobSpec(command=["sleep", str(seconds)], timeout_s=120),
            tags={"client": str(index)},
        )
        await self._send_retrying(ws, cmd)


def describe(history: History, errors: list[str]) -> dict[str, Any]:
    """A short account of a workload for a test's output."""
    return {
        "summary": history.summary(),
        "done": history.done,
        "client_errors": errors[:10],
        "jobs": len(history.jobs),
    }
