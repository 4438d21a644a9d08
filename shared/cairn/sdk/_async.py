"""The async core of the SDK. Every call is one idempotent command or one query; commands that
record a run's progress go through the outbox, so an outage spools them instead of failing.

``AsyncWorkspace`` is the face: experiments and runs here, and beside them ``ws.assets``
(environments, compute, datastores), ``ws.models``, ``ws.datastores`` (their files) and
``ws.datasets``. The sync facade (``Workspace``, ``Run``, ``Model``...) wraps these classes and
nothing else; they never import it. Bytes move through :mod:`cairn.data`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cairn.bus import Connection
from cairn.bus import connect as bus_connect
from cairn.data import download_file, upload_file
from cairn.errors import CairnError
from cairn.log import get_logger
from cairn.proto.artifacts import ListRunFiles
from cairn.proto.commands import (
    Accepted,
    AddRunProperties,
    CancelRun,
    Command,
    CompleteRun,
    CreateRun,
    CreateWorkspace,
    FailRun,
    GetRun,
    ListExperiments,
    ListRuns,
    SetRunTags,
    StartRun,
)
from cairn.proto.jobs import GetJob, ListJobs
from cairn.proto.metrics import CompareMetric, GetMetrics, LogMetrics, MetricHistory, MetricKind
from cairn.sdk._async_assets import AsyncAssets
from cairn.sdk._async_data import AsyncDatasets, AsyncDatastores
from cairn.sdk._async_models import AsyncModels
from cairn.sdk._jobs import ScriptRunConfig, follow, print_logs, submit
from cairn.sdk._metrics import MetricBuffer, batches, wire_value
from cairn.sdk._outbox import Outbox
from cairn.sdk._session import Session, new_id
from cairn.sdk._waiting import WaitDisplay
from cairn.settings import Settings, load_settings

__all__ = ["AsyncExperiment", "AsyncRun", "AsyncWorkspace", "connect", "new_id"]

log = get_logger("cairn.sdk")
FLUSH_WINDOW = 4


class AsyncWorkspace(Session):
    def __init__(self, conn: Connection, name: str, settings: Settings | None = None) -> None:
        super().__init__(conn, name, settings)
        self.outbox = Outbox(self.client, self.settings.home_path / "spool")
        self.assets = AsyncAssets(self)
        self.models = AsyncModels(self)
        self.datastores = AsyncDatastores(self)
        self.datasets = AsyncDatasets(self)
        self._runs: set[AsyncRun] = set()
        self._replayer: asyncio.Task[None] | None = None

    async def record(self, command: Command, *, metrics: bool = False) -> Accepted | None:
        """Send through the outbox (spooled while the bus is away)."""
        reply = await self.outbox.send(command)
        self.saw(reply, metrics=metrics)
        if reply is None and self._replayer is None:
            self._replayer = asyncio.create_task(self._replay_when_back())
        return reply

    async def _replay_when_back(self, every_s: float = 1.0) -> None:
        try:
            # polling: the outage may be on the far side of a live connection
            while not await self.outbox.replay():  # noqa: ASYNC110
                await asyncio.sleep(every_s)
        finally:
            self._replayer = None

    async def create(self, description: str = "") -> None:
        await self.send(
            CreateWorkspace(command_id=new_id(), name=self.name, description=description)
        )

    async def experiment(self, name: str) -> AsyncExperiment:
        """Get or create the experiment called ``name``."""
        return AsyncExperiment(self, name, await self.experiment_id(name))

    async def experiments(self) -> list[dict[str, Any]]:
        return list((await self.client.ask(ListExperiments(min_seq=self.seen_seq))).data)

    async def runs(
        self, experiment_name: str | None = None, *, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The runs of the workspace (or of one experiment), newest first."""
        q = ListRuns(min_seq=self.seen_seq, experiment_name=experiment_name, limit=limit)
        return list((await self.client.ask(q)).data)

    async def jobs(
        self, *, compute: str | None = None, active: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The jobs of the workspace (on one compute target; only queued and running ones)."""
        q = ListJobs(compute=compute, active=active, limit=limit)
        return list((await self.client.ask(q)).data)

    def run(self, run_id: str, experiment_name: str = "") -> AsyncRun:
        """An existing run, by id (no round trip)."""
        return AsyncRun(self, run_id, experiment_name)

    async def compare(self, experiment_id: str, name: str) -> list[dict[str, Any]]:
        q = CompareMetric(experiment_id=experiment_id, name=name, min_seq=self.seen_metrics_seq)
        return list((await self.client.ask(q)).data)

    async def close(self, timeout: float = 30.0) -> None:
        """Flush every open run's metrics; leave what cannot be sent in the spool."""
        for run in list(self._runs):
            with contextlib.suppress(CairnError, TimeoutError):
                await asyncio.wait_for(run.flush(), timeout)
            await run.stop_flusher()
        if self._replayer is not None:
            if self.conn.nc.is_connected:  # the bus is back: give the spool a chance to drain
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._replayer), timeout)
            self._replayer.cancel()
        self.outbox.close()


class AsyncExperiment:
    def __init__(self, workspace: AsyncWorkspace, name: str, experiment_id: str) -> None:
        self.workspace = workspace
        self.name = name
        self.id = experiment_id

    async def create_run(
        self,
        *,
        display_name: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> AsyncRun:
        run_id = run_id or new_id()
        await self.workspace.record(
            CreateRun(
                command_id=new_id(),
                run_id=run_id,
                experiment_name=self.name,
                display_name=display_name,
                parent_run_id=parent_run_id,
            )
        )
        return AsyncRun(self.workspace, run_id, self.name)

    async def start_run(self, *, display_name: str | None = None) -> AsyncRun:
        run = await self.create_run(display_name=display_name)
        await run.start()
        return run

    async def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.workspace.runs(self.name, limit=limit)

    async def submit(
        self,
        config: ScriptRunConfig,
        *,
        tags: dict[str, str] | None = None,
        display_name: str | None = None,
    ) -> AsyncRun:
        """Run ``config`` as a job on its compute target; returns the queued run at once."""
        ws = self.workspace
        run_id = await submit(ws, self.name, config, tags=tags, display_name=display_name)
        return AsyncRun(ws, run_id, self.name)


class AsyncRun:
    def __init__(self, workspace: AsyncWorkspace, run_id: str, experiment_name: str = "") -> None:
        self.workspace = workspace
        self.id = run_id
        self.experiment_name = experiment_name
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.buffer = MetricBuffer(self._wake_up)
        self.flush_interval_s = 1.0
        self._send_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.errors: list[CairnError] = []

    def _wake_up(self) -> None:
        self.loop.call_soon_threadsafe(self._wake.set)

    @property
    def attempt(self) -> int | None:
        """Inside a job, for the job's own run: the attempt this process belongs to (its
        metrics are refused once a newer attempt has taken the run over)."""
        if os.environ.get("CAIRN_RUN_ID") != self.id:
            return None
        raw = os.environ.get("CAIRN_ATTEMPT", "")
        return int(raw) if raw.isdigit() else None

    # -- lifecycle ------------------------------------------------------------------------

    async def _send(self, cmd: Command) -> None:
        await self.workspace.record(cmd)

    async def start(self) -> None:
        await self._send(StartRun(command_id=new_id(), run_id=self.id))

    async def complete(self) -> bool:
        """Send every logged point, then mark the run Completed. True once all of it is
        stored; False when it could only be spooled (one warning says so): the run reaches its
        final state when the spool is sent (by this process once the bus is back, by
        ``cairn sync``, or by an agent or ``cairn up`` on this machine)."""
        await self.flush()
        return await self._end(CompleteRun(command_id=new_id(), run_id=self.id), "Completed")

    async def fail(self, error: str = "") -> bool:
        """Like :meth:`complete`, for a run that failed with ``error``."""
        with contextlib.suppress(CairnError):
            await self.flush()
        cmd = FailRun(command_id=new_id(), run_id=self.id, error=error[:16384])
        return await self._end(cmd, "Failed")

    async def cancel(self, reason: str = "") -> bool:
        with contextlib.suppress(CairnError):
            await self.flush()
        cmd = CancelRun(command_id=new_id(), run_id=self.id, reason=reason)
        return await self._end(cmd, "Canceled")

    async def _end(self, cmd: Command, status: str) -> bool:
        await self._send(cmd)
        await self.stop_flusher()
        return await self.stored(f"becomes {status}")

    async def stored(self, then: str = "gets its points") -> bool:
        """True when nothing this workspace sent waits in the spool (one more try to send it
        first); else False and one warning: the run ``then`` when the spool is sent."""
        outbox = self.workspace.outbox
        if outbox.offline and not await outbox.replay():
            log.warning(
                "run_spooled",
                run_id=self.id,
                spool=str(outbox.spool.path),
                detail=f"the bus is unreachable: this run {then} when the spool is sent "
                "(cairn sync; an agent or cairn up on this machine sends it on its own)",
            )
            return False
        return True

    async def set_tags(self, tags: dict[str, str]) -> None:
        await self._send(SetRunTags(command_id=new_id(), run_id=self.id, tags=tags))

    async def add_properties(self, properties: dict[str, str]) -> None:
        cmd = AddRunProperties(command_id=new_id(), run_id=self.id, properties=properties)
        await self.workspace.client.send(cmd)

    async def child(self, display_name: str | None = None) -> AsyncRun:
        exp = AsyncExperiment(self.workspace, self.experiment_name, "")
        run = await exp.create_run(display_name=display_name, parent_run_id=self.id)
        await run.start()
        return run

    async def details(self) -> dict[str, Any]:
        q = GetRun(min_seq=self.workspace.seen_seq, run_id=self.id)
        return dict((await self.workspace.client.ask(q)).data)

    async def get_status(self) -> str:
        return str((await self.details())["status"])

    async def job(self) -> dict[str, Any]:
        """The job behind this run: its compute, attempts, agent (a submitted run's only)."""
        data: dict[str, Any] = (await self.workspace.client.ask(GetJob(run_id=self.id))).data
        return data

    async def wait_for_completion(
        self,
        *,
        out: Callable[[str], None] | None = None,
        timeout: float | None = None,
        show: bool | None = None,
    ) -> dict[str, Any]:
        """Wait for the run to end, passing its output to ``out`` as it arrives when given;
        returns the run's details. On stderr, where the run waits (its place in the queue, or
        that no agent serves its compute target and how to start one) and a last line with
        its id and status: ``show=True`` always, ``None`` on a terminal, ``False`` never (a
        missing agent is still logged once as a warning)."""
        display = WaitDisplay(self.id, show=bool(show), live=None if show is not False else False)
        return await follow(self.workspace, self.id, out=out, timeout=timeout, display=display)

    async def print_logs(self, out: Callable[[str], None]) -> int:
        """Pass the output the job has logged so far to ``out``; returns the chunks."""
        return await print_logs(self.workspace, self.id, out)

    # -- metrics --------------------------------------------------------------------------

    def log(self, name: str, kind: MetricKind, value: Any, step: int | None = None) -> None:
        """Buffer one point; never waits on the network. Safe from any thread. NaN and
        infinities become their strings (``wire_value``); a value of the wrong type raises."""
        self.buffer.add(name, kind, wire_value(kind, value), step)
        if self._flusher is None:
            self.loop.call_soon_threadsafe(self._ensure_flusher)

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush_loop())
            self.workspace._runs.add(self)

    async def _flush_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if self._closing:
                return
            try:
                await self.flush()
            except CairnError as exc:
                log.warning("metrics_refused", run_id=self.id, code=exc.code, error=exc.message)

    async def stop_flusher(self) -> None:
        """Stop the background flusher (by flag, not cancellation: it may be mid-send)."""
        if self._flusher is not None:
            self._closing = True
            self._wake.set()
            await self._flusher
            self._flusher, self._closing = None, False
        self.workspace._runs.discard(self)

    async def flush(self) -> None:
        """Send every buffered point (a few batches in flight at once); raise the first
        refusal (a typed error) if any."""
        async with self._send_lock:
            pending = batches(self.buffer.take())
            for start in range(0, len(pending), FLUSH_WINDOW):
                await asyncio.gather(
                    *(self._send_batch(b) for b in pending[start : start + FLUSH_WINDOW])
                )
        if self.errors:
            first, self.errors = self.errors[0], []
            raise first

    async def _send_batch(self, batch: list[Any]) -> None:
        cmd = LogMetrics(command_id=new_id(), run_id=self.id, points=batch, attempt=self.attempt)
        try:
            await self.workspace.record(cmd, metrics=True)
        except CairnError as exc:
            self.errors.append(exc)

    async def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """Azure-shaped metrics; long scalar series are fetched page by page."""
        await self.flush()
        client = self.workspace.client
        q = GetMetrics(run_id=self.id, name=name, min_seq=self.workspace.seen_metrics_seq)
        found: dict[str, Any] = (await client.ask(q)).data
        out: dict[str, Any] = {}
        for metric, entry in found.items():
            if "value" in entry:
                out[metric] = entry["value"]
            else:
                out[metric] = [p[2] for p in await self.history(metric)]
        return out

    async def history(self, name: str, max_points: int = 0) -> list[list[Any]]:
        """``[step, time, value]`` for every point, or ``max_points`` downsampled buckets."""
        points: list[list[Any]] = []
        after: tuple[int, int, int] | None = None
        while True:
            q = MetricHistory(
                run_id=self.id,
                name=name,
                max_points=max_points,
                after=after,
                min_seq=self.workspace.seen_metrics_seq,
            )
            page = (await self.workspace.client.ask(q)).data
            points.extend(page["points"])
            if page["next"] is None:
                return points
            after = tuple(page["next"])

    # -- files ----------------------------------------------------------------------------

    async def upload_file(self, name: str, path: Path, show_progress: bool | None = None) -> None:
        reply = await upload_file(
            self.workspace.client, self.id, name, path, show_progress=show_progress
        )
        self.workspace.saw(reply)

    async def files(self, prefix: str = "") -> list[dict[str, Any]]:
        q = ListRunFiles(run_id=self.id, prefix=prefix, min_seq=self.workspace.seen_seq)
        return list((await self.workspace.client.ask(q)).data)

    async def download_file(
        self, name: str, target: Path, show_progress: bool | None = None
    ) -> Path:
        ws = self.workspace
        return await download_file(
            ws.client, self.id, name, target, min_seq=ws.seen_seq, show_progress=show_progress
        )


@contextlib.asynccontextmanager
async def connect(
    settings: Settings | None = None, *, workspace: str | None = None
) -> AsyncIterator[AsyncWorkspace]:
    """Connect to the workspace named by the settings (``cairn up`` writes them)."""
    settings = settings or load_settings()
    conn = await bus_connect(settings, name="cairn-sdk")
    ws = AsyncWorkspace(conn, workspace or settings.workspace, settings)
    try:
        yield ws
    finally:
        await ws.close()
        await conn.close()
