"""The compute agent: capacity and heartbeats in ``cairn_agents``, and jobs pulled from JOBS.

It pulls tickets from its compute target's durable consumer only while it has free slots,
claims each with the scheduler, acknowledges the ticket once the claim is recorded (the lease
lives in the event log from then on) and runs the attempt. A stale ticket (the run moved on)
is terminated. On stop it either drains (``drain=True``: finishes running jobs, takes no new
ones) or stops its jobs and reports them lost, so they are re-queued at once. It also sends
what scripts on its machine left in the spool of its home (:mod:`cairn.spool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import Connection, ensure_consumer
from cairn.errors import (
    CairnError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    StaleAttempt,
    Unavailable,
)
from cairn.log import get_logger
from cairn.proto.jobs import Assignment, ClaimJob, FinishJob, Ticket, derived_id
from cairn.proto.streams import AGENTS_BUCKET, JOBS, job_consumer
from cairn.proto.subjects import agent_key, validate_token
from cairn.pythons import dotted, listed_pythons
from cairn.rpc import Client
from cairn.services.agent._backends import Backend, DockerBackend, ProcessBackend, stack_of
from cairn.services.agent._capacity import AgentInfo, detect, detect_gpus
from cairn.services.agent._env import Environments
from cairn.services.agent._mlflow import MlflowServer
from cairn.services.agent._runner import Attempt
from cairn.settings import Settings
from cairn.spool import SEND_EVERY_S, send_spools_periodically
from cairn.telemetry import AGENT_BUSY_SLOTS, AGENT_SLOTS, forget, read_through

__all__ = ["AgentService", "list_agents"]

log = get_logger("cairn.agent")
_encoder = msgspec.json.Encoder()
_ticket_decoder = msgspec.json.Decoder(Ticket)


class AgentService:
    name = "agent"

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        *,
        compute: str = "local",
        slots: int = 1,
        labels: list[str] | None = None,
        agent_id: str | None = None,
        drain: bool = False,
        backend: str = "process",
        spool_every_s: float = SEND_EVERY_S,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.compute = validate_token(compute, "compute")
        self.workspace = validate_token(settings.workspace, "workspace")
        self.slots = max(1, slots)
        self.labels = [validate_token(label, "label") for label in labels or []]
        self.agent_id = agent_key(agent_id or f"{self.compute}-{uuid.uuid4().hex[:12]}")
        self.drain = drain
        self.spool_every_s = spool_every_s
        self.interval_s = AGENTS_BUCKET.ttl_s / 3
        self.started_at = time.time()
        self.info: AgentInfo | None = None
        self._kv: Any = None
        self.client = Client(conn, self.workspace)
        root = settings.state_path / "agent"
        self.work_root = root / "work" / self.agent_id
        self.snapshots = root / "snapshots"
        self.data_cache = root / "data"
        #: the folder of this agent's job sockets (one private folder per attempt): short, as
        #: a socket's path must be, and walled off from every job but for its own socket
        self.gates = Path(tempfile.gettempdir()) / f"cairn-gates-{self.agent_id}"
        self.gates.mkdir(mode=0o700, exist_ok=True)
        self.backend: Backend
        if backend == "docker":
            self.backend = DockerBackend(root / "docker")
        elif backend == "process":
            self.backend = ProcessBackend(
                Environments(root / "envs", downloads=settings.python_downloads).python_for,
                warm=settings.job_warm_start,
                warm_answer_s=settings.job_warm_answer_s,
                env_allow=settings.job_env_allow,
                protect=[*_protected(settings), self.gates] if settings.job_confine_files else None,
            )
        else:
            raise InvalidInput(f"unknown backend {backend!r}: choose process or docker")
        self.running: dict[str, asyncio.Task[None]] = {}
        self.attempts: dict[str, Attempt] = {}
        self.gpu_info = detect_gpus()  # once: the devices do not change under a running agent
        self.gpus = [g.index for g in self.gpu_info]
        self.free_gpus = list(self.gpus)
        self.pythons: list[str] = []  # read in start(): uv takes a moment
        self._slot_freed = asyncio.Event()
        #: the MLflow API of this agent's jobs, one loopback port for all (``_mlflow``)
        self.mlflow = MlflowServer(settings)

    async def heartbeat(self) -> AgentInfo:
        """Write the agent's key (capacity, free slots, time); the bucket's TTL drops it if
        heartbeats stop."""
        if self._kv is None:
            self._kv = await self.conn.js.key_value(AGENTS_BUCKET.bucket)
        self.info = detect(
            self.agent_id,
            self.compute,
            self.slots,
            self.labels,
            self.started_at,
            time.time(),
            free_slots=self.slots - self._busy(),
            gpus=self.gpu_info,
            workspace=self.workspace,
            pythons=self.pythons,
        )
        await self._kv.put(self.agent_id, _encoder.encode(self.info))
        return self.info

    async def start(self) -> None:
        if not self.conn.own_jetstream:
            raise CairnError(
                f"an agent connects with agent credentials (the services' account), not as a"
                f" person: {self.settings.nats_user!r} cannot pull jobs; give the agent's"
                " CAIRN_NATS_USER and CAIRN_NATS_PASSWORD"
            )
        try:
            found = await asyncio.to_thread(listed_pythons, self.settings.python_downloads)
            self.pythons = [dotted(v) for v in found]
        except Unavailable as exc:  # then the scheduler checks pins against its own machine
            log.warning("pythons_unlisted", error=exc.message)
        info = await self.heartbeat()
        AGENT_SLOTS.labels(self.agent_id, self.compute).set(self.slots)
        read_through(AGENT_BUSY_SLOTS, (self.agent_id, self.compute), self, self._busy)
        if isinstance(self.backend, DockerBackend):
            alive = {a.agent_id for a in await list_agents(self.conn)}
            reaped = await asyncio.to_thread(self.backend.reap, alive, stack_of(self.settings))
            if reaped:
                log.warning("orphan_containers_removed", runs=reaped)
        log.info(
            "agent_registered",
            agent_id=self.agent_id,
            compute=self.compute,
            gpus=len(info.gpus),
            labels=info.labels,
            slots=self.slots,
            backend=self.backend.name,
        )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._beat(stop))
                tg.create_task(self._pull(stop))
                tg.create_task(self._send_spools(stop))
        finally:
            await self.mlflow.close()
            self.backend.close()
            shutil.rmtree(self.gates, ignore_errors=True)
            forget(AGENT_SLOTS, self.agent_id, self.compute)
            forget(AGENT_BUSY_SLOTS, self.agent_id, self.compute, owner=self)
        with contextlib.suppress(Exception):  # leaving: say so rather than wait for the TTL
            await self._kv.delete(self.agent_id)

    async def _send_spools(self, stop: asyncio.Event) -> None:
        """What scripts on this machine spooled while the bus was away (their jobs' among
        them), sent at start and every ``spool_every_s``: no one has to run ``cairn sync``."""
        spool = self.settings.home_path / "spool"
        await send_spools_periodically(self.conn, spool, stop, self.spool_every_s)

    async def _beat(self, stop: asyncio.Event) -> None:
        failing = False  # a failure is logged once, when the beats start failing
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
            if stop.is_set():
                break
            try:
                await self.heartbeat()
            except Exception as exc:  # the bus may be away; the next beat tries again
                if not failing:
                    log.warning("heartbeat_failed", error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("heartbeat_resumed")
                failing = False

    # -- pulling -------------------------------------------------------------------------

    async def _subscribe(self) -> Any:
        config = job_consumer(
            self.workspace,
            self.compute,
            ack_wait_s=self.settings.job_lease_s,
            max_deliver=self.settings.job_max_deliver,
        )
        try:
            await self.conn.js.consumer_info(JOBS.name, config.durable_name)
        except Exception:  # not there yet: the first agent (or the scheduler) makes it
            await ensure_consumer(self.conn, JOBS.name, config)
        return await self.conn.js.pull_subscribe_bind(durable=config.durable_name, stream=JOBS.name)

    async def _pull(self, stop: asyncio.Event) -> None:
        psub = await self._subscribe()
        try:
            while not stop.is_set():
                free = self.slots - self._busy()
                if free <= 0:
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), 1.0)
                    continue
                try:
                    msgs = await psub.fetch(free, timeout=1.0)
                except TimeoutError:  # nothing to do (nats-py's timeout is one)
                    continue
                except Exception as exc:  # the bus is away: the connection logs the outage
                    log.debug("fetch_failed", error=repr(exc))
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._take(msg)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            await self._wind_down()

    async def _wind_down(self) -> None:
        if not self.running:
            return
        if not self.drain:
            for attempt in self.attempts.values():
                attempt.abandon(f"agent {self.agent_id} stopped")
        log.info("agent_winding_down", jobs=len(self.running), drain=self.drain)
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _take(self, msg: Any) -> None:
        try:
            ticket = _ticket_decoder.decode(msg.data)
        except msgspec.DecodeError:
            await msg.term()
            return
        claim_id = derived_id("claim", self.workspace, ticket.run_id, ticket.queue_n, self.agent_id)
        claim = ClaimJob(
            command_id=claim_id,
            run_id=ticket.run_id,
            queue_n=ticket.queue_n,
            agent_id=self.agent_id,
        )
        try:
            reply = await self.client.send_any(claim)
            assignment = msgspec.convert(getattr(reply, "data", None), Assignment)
        except (StaleAttempt, NotFound, InvalidTransition) as exc:
            log.info("ticket_stale", run_id=ticket.run_id, reason=str(exc))
            await msg.term()
            return
        except (CairnError, msgspec.ValidationError) as exc:
            log.warning("claim_failed", run_id=ticket.run_id, error=repr(exc))
            await msg.nak(delay=1)
            return
        with contextlib.suppress(Exception):  # a lost ack only means a stale ticket later
            await msg.ack()
        self._start(assignment)

    def _busy(self) -> int:
        """Slots taken: attempts whose job's process has not exited yet."""
        return sum(1 for a in self.attempts.values() if not a.exited.is_set())

    def _start(self, assignment: Assignment) -> None:
        key = f"{assignment.run_id}-{assignment.attempt}"
        running = self.running.get(key)
        if running is not None and not running.done():
            # a ticket delivered again (its ack was lost) and claimed again: the scheduler
            # answers with the same attempt, which this agent is running already
            log.info("attempt_already_running", run_id=assignment.run_id)
            return
        gpus: list[int] = []
        if assignment.job.gpus:
            gpus, self.free_gpus = (
                self.free_gpus[: assignment.job.gpus],
                self.free_gpus[assignment.job.gpus :],
            )
        attempt = Attempt(
            client=self.client,
            settings=self.settings,
            assignment=assignment,
            agent_id=self.agent_id,
            workdir=self.work_root / f"{assignment.run_id}-{assignment.attempt}",
            snapshots=self.snapshots,
            data_cache=self.data_cache,
            backend=self.backend,
            gpus=gpus,
            gates=self.gates,
            mlflow=self.mlflow,
        )
        self.attempts[key] = attempt
        self.running[key] = asyncio.create_task(self._run_attempt(key, attempt, gpus))

    async def _free_when_exited(self, attempt: Attempt, gpus: list[int]) -> None:
        await attempt.exited.wait()
        self.free_gpus += gpus
        self._slot_freed.set()

    async def _run_attempt(self, key: str, attempt: Attempt, gpus: list[int]) -> None:
        freed = asyncio.create_task(self._free_when_exited(attempt, gpus))
        try:
            await attempt.run()
        except Exception as exc:
            log.error("attempt_crashed", key=key, error=repr(exc))
            with contextlib.suppress(Exception):
                await self.client.send(
                    FinishJob(
                        command_id=derived_id(
                            "finish", self.workspace, attempt.a.run_id, attempt.a.attempt
                        ),
                        run_id=attempt.a.run_id,
                        attempt=attempt.a.attempt,
                        outcome="lost",
                        error=f"agent error: {exc!r}",
                    )
                )
        finally:
            attempt.exited.set()
            await freed
            self.running.pop(key, None)
            self.attempts.pop(key, None)


async def list_agents(conn: Connection) -> list[AgentInfo]:
    """Every agent whose key has not expired."""
    from nats.js.errors import NoKeysError

    kv = await conn.js.key_value(AGENTS_BUCKET.bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in keys:
        with contextlib.suppress(Exception):  # expired or deleted between keys() and get()
            entry = await kv.get(key)
            if entry.value:
                out.append(msgspec.json.decode(entry.value, type=AgentInfo))
    return sorted(out, key=lambda a: (a.compute, a.agent_id))


def _protected(settings: Settings) -> list[Path]:
    """What a process-backend job is kept out of: the agent's home and wherever its state,
    artifacts and keys live when they are elsewhere."""
    found = [settings.home_path, settings.state_path, settings.artifacts_path]
    if settings.keys_dir:
        found.append(Path(settings.keys_dir).expanduser())
    return found
