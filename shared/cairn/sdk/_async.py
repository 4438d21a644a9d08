"""The async core of the SDK. Every call is one idempotent command or one query; commands that
record a run's progress go through the outbox, so an outage spools them instead of failing.

``AsyncWorkspace`` is the face: experiments and runs here, and beside them ``ws.assets``
(environments, compute, datastores), ``ws.models``, ``ws.datastores`` (their files),
``ws.datasets`` and ``ws.secrets``. The sync facade (``Workspace``, ``Run``, ``Model``...) wraps
these classes and nothing else; they never import it. Bytes move through :mod:`cairn.data`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cairn.bus import Connection
from cairn.bus import connect as bus_connect
from cairn.data import download_file, upload_file
from cairn.domain.run import RunStatus
from cairn.errors import (
    AlreadyExists,
    CairnError,
    InvalidInput,
    InvalidTransition,
    PermissionDenied,
)
from cairn.log import get_logger
from cairn.proto.artifacts import ListRunFiles
from cairn.proto.commands import (
    MAX_RUNS_PAGE,
    Accepted,
    AddRunProperties,
    ArchiveExperiment,
    CancelRun,
    Command,
    CompleteRun,
    CreateRun,
    CreateWorkspace,
    FailRun,
    GetExperiment,
    GetHistory,
    GetRun,
    HeartbeatRun,
    HistoryKind,
    ListExperiments,
    ListRuns,
    ListWorkspaces,
    SetDefaultDatastore,
    SetRunTags,
    StartRun,
)
from cairn.proto.jobs import GetJob, ListJobs, SubmitJob
from cairn.proto.metrics import CompareMetric, GetMetrics, LogMetrics, MetricHistory, MetricKind
from cairn.proto.paths import validate_run_path
from cairn.proto.pipelines import GetPipeline
from cairn.rpc import Client
from cairn.sdk._async_assets import AsyncAssets
from cairn.sdk._async_data import AsyncDatasets, AsyncDatastores
from cairn.sdk._async_endpoints import AsyncEndpoints
from cairn.sdk._async_events import AsyncWebhooks, FeedEvent, feed
from cairn.sdk._async_models import AsyncModels
from cairn.sdk._async_schedules import AsyncSchedules
from cairn.sdk._async_secrets import AsyncSecrets
from cairn.sdk._hyperdrive import SweepConfig, cancel_sweep, get_sweep, submit_sweep
from cairn.sdk._jobs import ScriptRunConfig, build_submission, follow, print_logs, submit
from cairn.sdk._metrics import MetricBuffer, batches, wire_value
from cairn.sdk._outbox import Outbox
from cairn.sdk._session import Session, as_of_fields, new_id
from cairn.sdk._waiting import WaitDisplay
from cairn.settings import Settings, load_settings

__all__ = ["AsyncExperiment", "AsyncRun", "AsyncWorkspace", "connect", "exit_error", "new_id"]

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
        self.secrets = AsyncSecrets(self)
        self.schedules = AsyncSchedules(self)
        self.webhooks = AsyncWebhooks(self)
        self.endpoints = AsyncEndpoints(self, self.secrets)
        self._runs: set[AsyncRun] = set()
        #: runs this process beats for (open, or ended only in the spool so far)
        self._beating: set[AsyncRun] = set()
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

    async def create(self, description: str = "", *, exist_ok: bool = True) -> bool:
        """Create this workspace (its creator becomes its first member); False when it
        existed already and you are its member (``AlreadyExists`` unless ``exist_ok``)."""
        try:
            mine = {w["name"] for w in await self.workspaces()}
        except PermissionDenied:  # no such workspace, or not yours: creating it says which
            mine = set()
        if self.name in mine:
            if not exist_ok:
                raise AlreadyExists(f"workspace {self.name} exists already")
            return False
        await self.send(
            CreateWorkspace(command_id=new_id(), name=self.name, description=description)
        )
        return True

    def events(
        self,
        types: Iterable[str] = (),
        *,
        since: int | datetime | None = None,
        durable: str | None = None,
        follow: bool = True,
        poll_s: float = 0.5,
    ) -> AsyncGenerator[FeedEvent, None]:
        """The workspace's events, oldest first, as typed ``FeedEvent`` s (docs/events.md):
        ``async for event in ws.events(types=["RunCompleted"], durable="ci"): ...``.
        ``types``: published event type names (an unknown one is ``UnknownEventType``,
        listing them); ``since``: a stream sequence (events after it) or a moment; ``durable``:
        a name under which the position is recorded on this machine, so the next subscriber
        of that name resumes where this one stopped (at least once: deduplicate on ``seq``);
        ``follow``: wait for new events at the end, else stop there."""
        return feed(self, types=types, since=since, durable=durable, follow=follow, poll_s=poll_s)

    async def set_default_datastore(self, name: str) -> None:
        """Make datastore ``name`` the workspace's default: where job outputs without a path
        and local job inputs go (the registry's datastore ``name`` must exist)."""
        await self.assets.get("datastore", name)
        await self.send(SetDefaultDatastore(command_id=new_id(), datastore=name))

    async def workspaces(self) -> list[dict[str, Any]]:
        """The workspaces this user is a member of, with their roles there."""
        return list((await self.client.ask(ListWorkspaces())).data)

    async def experiment(self, name: str) -> AsyncExperiment:
        """Get or create the experiment called ``name``."""
        return AsyncExperiment(self, name, await self.experiment_id(name))

    async def experiments(
        self, archived: Literal["no", "only", "all"] = "no", *, as_of: datetime | int | None = None
    ) -> list[dict[str, Any]]:
        """The experiments: the active ones, or the archived ones (``"only"``), or all, with
        their run counts; ``as_of`` (a time, or a stream sequence): as the log held them then."""
        q = ListExperiments(min_seq=self.seen_seq, archived=archived, **as_of_fields(as_of))
        return list((await self.client.ask(q)).data)

    async def get_experiment(
        self, name: str, *, as_of: datetime | int | None = None
    ) -> dict[str, Any]:
        """Experiment ``name`` (archived or not) as ``experiments`` lists it, without creating
        it; ``as_of``: as the log held it then. ``NotFound`` when it did not exist."""
        q = GetExperiment(min_seq=self.seen_seq, name=name, **as_of_fields(as_of))
        return dict((await self.client.ask(q)).data)

    async def runs_page(
        self,
        experiment_name: str | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        limit: int = 100,
        cursor: str | None = None,
        parent_run_id: str | None = None,
        count: bool = False,
        as_of: datetime | int | None = None,
    ) -> dict[str, Any]:
        """One page of the runs query (``run.list``): ``{"runs": [...], "next_cursor": str |
        None, "remaining": int | None, "metrics_seq": int}``; pass ``next_cursor`` back as
        ``cursor`` for the next page. ``filter`` and ``order_by`` as in docs/design.md, e.g.
        ``filter="metrics.loss < 0.2 AND tags.team = 'a'"``,
        ``order_by=["metrics.loss.min ASC"]``; ``count`` also answers ``remaining``.
        ``as_of`` (a time, or a stream sequence): the runs as the log held them then (no
        metrics in the filter or order then)."""
        q = ListRuns(
            **as_of_fields(as_of),
            min_seq=self.seen_seq,
            metrics_min_seq=self.seen_metrics_seq,
            experiment_name=experiment_name,
            parent_run_id=parent_run_id,
            filter=filter,
            order_by=tuple(order_by),
            limit=limit,
            cursor=cursor,
            count=count,
        )
        return dict((await self.client.ask(q)).data)

    async def iter_runs(
        self,
        experiment_name: str | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 100,
        parent_run_id: str | None = None,
        as_of: datetime | int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every run that matches, in order, read a page at a time (following cursors);
        ``as_of``: as the log held them then."""
        cursor: str | None = None
        while True:
            page = await self.runs_page(
                experiment_name,
                filter=filter,
                order_by=order_by,
                limit=page_size,
                cursor=cursor,
                parent_run_id=parent_run_id,
                as_of=as_of,
            )
            for row in page["runs"]:
                yield row
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def runs(
        self,
        experiment_name: str | None = None,
        *,
        limit: int | None = 100,
        filter: str = "",
        order_by: Sequence[str] = (),
        as_of: datetime | int | None = None,
    ) -> list[dict[str, Any]]:
        """The first ``limit`` runs that match (every one with ``limit=None``), newest first
        unless ``order_by`` says otherwise; ``as_of``: as the log held them then."""
        found: list[dict[str, Any]] = []
        page_size = MAX_RUNS_PAGE if limit is None else max(1, min(limit, MAX_RUNS_PAGE))
        if limit is not None and limit < 1:
            raise InvalidInput(f"runs: limit must be at least 1, not {limit}")
        cursor: str | None = None
        while limit is None or len(found) < limit:
            page = await self.runs_page(
                experiment_name,
                filter=filter,
                order_by=order_by,
                limit=page_size,
                cursor=cursor,
                as_of=as_of,
            )
            found.extend(page["runs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return found if limit is None else found[:limit]

    async def jobs(
        self, *, compute: str | None = None, active: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The jobs of the workspace (on one compute target; only queued and running ones)."""
        q = ListJobs(compute=compute, active=active, limit=limit)
        return list((await self.client.ask(q)).data)

    async def history(
        self, kind: HistoryKind, name: str, *, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        """Every event of one entity (``kind``: run, experiment, model, environment,
        datastore, compute, dataset, schedule or workspace; ``name``: the run's id or the
        name) after ``after_seq``, oldest first: sequence, time, event, actor, the command
        that caused it, its correlation id and its data. Read from the log, page by page."""
        events: list[dict[str, Any]] = []
        after = after_seq
        while True:
            q = GetHistory(entity_kind=kind, name=name, after_seq=after, min_seq=self.seen_seq)
            page = (await self.client.ask(q)).data
            events.extend(page["events"])
            if page["next_after"] is None:
                return events
            after = int(page["next_after"])

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
        for run in list(self._beating):
            await run.stop_beating()
        replayer = self._replayer  # it clears the attribute itself when it ends
        if replayer is not None:
            if self.conn.nc.is_connected:  # the bus is back: give the spool a chance to drain
                await asyncio.wait([replayer], timeout=timeout)
            replayer.cancel()
            await asyncio.wait([replayer])
            if not replayer.cancelled() and (exc := replayer.exception()) is not None:
                log.warning("spool_replay_failed", error=repr(exc))
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

    async def archive(self, *, restore: bool = False) -> None:
        """Hide this experiment from experiment lists (``restore``: show it again); its
        runs stay as they are."""
        await self.workspace.send(
            ArchiveExperiment(command_id=new_id(), name=self.name, restore=restore)
        )

    async def start_run(self, *, display_name: str | None = None) -> AsyncRun:
        run = await self.create_run(display_name=display_name)
        await run.start()
        return run

    async def runs(
        self, limit: int | None = 100, *, as_of: datetime | int | None = None
    ) -> list[dict[str, Any]]:
        """This experiment's runs, newest first; ``as_of``: those the log held then."""
        return await self.workspace.runs(self.name, limit=limit, as_of=as_of)

    async def details(self, *, as_of: datetime | int | None = None) -> dict[str, Any]:
        """This experiment as ``ws.experiments`` lists it; ``as_of``: as it was then."""
        return await self.workspace.get_experiment(self.name, as_of=as_of)

    async def get_runs(
        self,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 100,
        include_children: bool = False,
    ) -> AsyncIterator[AsyncRun]:
        """Every run of this experiment that matches ``filter``, in ``order_by`` order (newest
        first by default), fetched lazily a page of ``page_size`` at a time. As in Azure ML
        v1, child runs only with ``include_children``."""
        if not include_children:
            filter = f"parent_run_id IS NULL AND ({filter})" if filter else "parent_run_id IS NULL"
        rows = self.workspace.iter_runs(
            self.name, filter=filter, order_by=order_by, page_size=page_size
        )
        async for row in rows:
            yield AsyncRun(self.workspace, row["run_id"], self.name)

    async def submit(
        self,
        config: ScriptRunConfig | SweepConfig,
        *,
        tags: dict[str, str] | None = None,
        display_name: str | None = None,
    ) -> AsyncRun:
        """Run ``config`` as a job on its compute target, or a ``HyperDriveConfig`` (any
        ``SweepConfig``) as a sweep (its parent run); returns the run at once."""
        ws = self.workspace
        if isinstance(config, SweepConfig):
            run_id = await submit_sweep(ws, self.name, config, tags=tags, display_name=display_name)
            return AsyncRun(ws, run_id, self.name)
        run_id = await submit(ws, self.name, config, tags=tags, display_name=display_name)
        return AsyncRun(ws, run_id, self.name)

    async def submission(
        self,
        config: ScriptRunConfig,
        *,
        tags: dict[str, str] | None = None,
        display_name: str | None = None,
    ) -> SubmitJob:
        """``config`` as the submission a schedule stores (code and local inputs uploaded)."""
        ws = self.workspace
        return await build_submission(ws, self.name, config, tags=tags, display_name=display_name)


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
        self._beater: asyncio.Task[None] | None = None
        self._ended = False

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
        """Mark the run Running; from then on this process beats for it until it ends."""
        await self._send(StartRun(command_id=new_id(), run_id=self.id))
        if self._beater is None and self.attempt is None:  # a job's own run: its agent's
            self._beater = self.loop.create_task(self._beat())
            self.workspace._beating.add(self)

    async def _beat(self) -> None:
        """Tell the tracking service every ``run_heartbeat_s`` that this process is alive: a
        run that misses three beats is failed as lost (its process was killed). One try per
        beat, never spooled: a beat that cannot be sent is simply the next one's to make."""
        every = self.workspace.settings.run_heartbeat_s
        client = Client(self.workspace.conn, self.workspace.name, attempts=1, timeout=every)
        client.headers = self.workspace.client.headers
        while True:
            try:
                await client.send(HeartbeatRun(command_id=new_id(), run_id=self.id, every_s=every))
            except (InvalidTransition, InvalidInput, PermissionDenied) as exc:
                # ended (failed as lost while this process could not reach the bus?), a job's,
                # or not ours to beat for: beating again would change nothing
                if not self._ended:  # else: the end this process spooled has been sent
                    log.warning(
                        "run_heartbeat_refused", run_id=self.id, code=exc.code, error=str(exc)
                    )
                self.workspace._beating.discard(self)
                return
            except Exception as exc:  # the bus or the service is away: the next beat tries
                log.debug("run_heartbeat_failed", run_id=self.id, error=repr(exc))
            await asyncio.sleep(every)

    async def stop_beating(self) -> None:
        """Stop beating for this run (it ended, or this process is closing)."""
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater
            self._beater = None
        self.workspace._beating.discard(self)

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

    async def sweep(self) -> dict[str, Any]:
        """The sweep this run is the parent of: its spec, status and trials (``sweep.get``)."""
        return await get_sweep(self.workspace, self.id)

    async def cancel_sweep(self, reason: str = "") -> None:
        """Stop the sweep this run is the parent of: its running trials are canceled."""
        await cancel_sweep(self.workspace, self.id, reason)

    async def _end(self, cmd: Command, status: str) -> bool:
        self._ended = True
        await self._send(cmd)
        await self.stop_flusher()
        stored = await self.stored(f"becomes {status}")
        if stored:  # else it beats on while this process lives, until the spool is sent
            await self.stop_beating()
        return stored

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

    async def get_children(
        self,
        recursive: bool = False,
        tags: str | dict[str, str] | None = None,
        properties: str | dict[str, str] | None = None,
        type: str | None = None,  # Azure ML v1's name
        status: str | None = None,
    ) -> list[AsyncRun]:
        """The child runs of this run, oldest first (their children too with ``recursive``),
        as Azure ML v1 filters them: ``tags``/``properties`` a key the run has or
        ``{key: value}`` pairs it has, ``status`` its status. ``type`` is refused: Cairn's
        runs carry no run type."""
        if type is not None:
            raise InvalidInput("get_children: type= is not supported (Cairn runs have no type)")
        if status is not None and status not in {s.value for s in RunStatus}:
            raise InvalidInput(
                f"get_children: status {status!r} is not one of"
                f" {', '.join(s.value for s in RunStatus)}"
            )
        for wanted in (tags, properties):  # a bad filter is refused even with no children
            _matches({}, wanted)
        found: list[dict[str, Any]] = []
        parents = [self.id]
        while parents:
            level: list[dict[str, Any]] = []
            for parent in parents:
                children = self.workspace.iter_runs(parent_run_id=parent, page_size=MAX_RUNS_PAGE)
                level.extend([row async for row in children])
            found.extend(level)
            parents = [row["run_id"] for row in level] if recursive else []
        found.sort(key=lambda row: (row["created_at"], row["run_id"]))
        return [
            AsyncRun(self.workspace, row["run_id"], row["experiment_name"])
            for row in found
            if _matches(row["tags"], tags)
            and _matches(row["properties"], properties)
            and status in (None, row["status"])
        ]

    # -- ``async with run:`` completes it, or fails it with the error that left the block --

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error = exit_error(kind, exc, tb)
        if error is None:
            await self.complete()
        else:
            await self.fail(error)

    async def details(self, *, as_of: datetime | int | None = None) -> dict[str, Any]:
        """The run's status, times, tags and properties; ``as_of`` (a time, or a stream
        sequence such as ``Accepted.seq``) gives them as they were then, read from the log."""
        q = GetRun(min_seq=self.workspace.seen_seq, run_id=self.id, **as_of_fields(as_of))
        return dict((await self.workspace.client.ask(q)).data)

    async def get_status(self, *, as_of: datetime | int | None = None) -> str:
        return str((await self.details(as_of=as_of))["status"])

    async def job(self) -> dict[str, Any]:
        """The job behind this run: its compute, attempts, agent (a submitted run's only)."""
        data: dict[str, Any] = (await self.workspace.client.ask(GetJob(run_id=self.id))).data
        return data

    async def pipeline(self) -> dict[str, Any]:
        """The pipeline this run is (a pipeline run's only): its status and its steps, each
        with its run, status, duration and, when reused, the run it stands for and why."""
        q = GetPipeline(run_id=self.id, min_seq=self.workspace.seen_seq)
        data: dict[str, Any] = (await self.workspace.client.ask(q)).data
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

    # -- secrets --------------------------------------------------------------------------

    async def get_secret(self, name: str) -> str:
        """Secret ``name``'s value; the read is recorded as this run's."""
        return await self.workspace.secrets.get(name, run_id=self.id)

    async def get_secrets(self, names: list[str]) -> dict[str, str]:
        return await self.workspace.secrets.get_many(names, run_id=self.id)

    # -- metrics --------------------------------------------------------------------------

    # The ``log*`` methods have the sync facade's (Azure ML v1's) signatures; the facade calls
    # them as they are. ``description`` is accepted as Azure's is and not stored (Cairn keeps
    # no per-metric description); anything but a string there is refused, which also catches a
    # call in the older ``log(name, kind, value, step)`` shape.

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Buffer one scalar point; never waits on the network. Safe from any thread."""
        _description(description)
        self.log_point(name, "scalar", value, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        _description(description)
        self.log_point(name, "list", value)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        _description(description or "")
        self.log_point(name, "row", kwargs)

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        _description(description)
        self.log_point(name, "table", value)

    async def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Store the image (a file, or a matplotlib figure as PNG) as a run file and log it."""
        _description(description)
        if (path is None) == (plot is None):
            raise InvalidInput("log_image takes exactly one of path= and plot=")
        suffix = Path(path).suffix if path else ".png"
        target = f"logged_images/{name}{suffix}"
        validate_run_path(target)
        if plot is not None:
            with tempfile.TemporaryDirectory(prefix="cairn-image-") as tmp:
                png = Path(tmp) / "plot.png"
                plot.savefig(png, format="png")
                await self.upload_file(target, png)
        else:
            await self.upload_file(target, Path(str(path)))
        self.log_point(name, "image", target)

    def log_point(self, name: str, kind: MetricKind, value: Any, step: int | None = None) -> None:
        """Buffer one point of any kind; never waits on the network. Safe from any thread.
        NaN and infinities become their strings (``wire_value``); a value of the wrong type
        raises."""
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

    async def get_metrics(
        self, name: str | None = None, *, as_of: datetime | int | None = None
    ) -> dict[str, Any]:
        """Azure-shaped metrics; long scalar series are fetched page by page. ``as_of`` (a
        time, or a stream sequence of the log's events) gives the batches the log held then."""
        await self.flush()
        client = self.workspace.client
        when = as_of_fields(as_of)
        q = GetMetrics(run_id=self.id, name=name, min_seq=self.workspace.seen_metrics_seq, **when)
        found: dict[str, Any] = (await client.ask(q)).data
        out: dict[str, Any] = {}
        for metric, entry in found.items():
            if "value" in entry:
                out[metric] = entry["value"]
            else:
                out[metric] = [p[2] for p in await self.history(metric, as_of=as_of)]
        return out

    async def history(
        self, name: str, max_points: int = 0, *, as_of: datetime | int | None = None
    ) -> list[list[Any]]:
        """``[step, time, value]`` for every point, or ``max_points`` downsampled buckets."""
        points: list[list[Any]] = []
        after: tuple[int, int, int] | None = None
        when = as_of_fields(as_of)
        while True:
            q = MetricHistory(
                run_id=self.id,
                name=name,
                max_points=max_points,
                after=after,
                min_seq=self.workspace.seen_metrics_seq,
                **when,
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

    async def files(
        self, prefix: str = "", *, as_of: datetime | int | None = None
    ) -> list[dict[str, Any]]:
        when = as_of_fields(as_of)
        q = ListRunFiles(run_id=self.id, prefix=prefix, min_seq=self.workspace.seen_seq, **when)
        return list((await self.workspace.client.ask(q)).data)

    async def download_file(
        self, name: str, target: Path, show_progress: bool | None = None
    ) -> Path:
        ws = self.workspace
        return await download_file(
            ws.client, self.id, name, target, min_seq=ws.seen_seq, show_progress=show_progress
        )


def _matches(have: dict[str, str], wanted: str | dict[str, str] | None) -> bool:
    """Azure ML v1's tag and property filters: a key that must be present, or pairs."""
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return wanted in have
    if isinstance(wanted, dict):
        return all(have.get(k) == str(v) for k, v in wanted.items())
    raise InvalidInput(f"a tag or property filter is a key or a dict, not {wanted!r:.60}")


def _description(description: object) -> None:
    if not isinstance(description, str):
        raise InvalidInput(
            f"description must be a string, not {type(description).__name__}"
            " (log(name, value, description='', step=None))"
        )


def exit_error(
    kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> str | None:
    """How a ``with run:`` block (sync or async) left: None when it ended normally, else the
    error the run fails with (the traceback, its last 16 KiB). One policy for both APIs."""
    if exc is None:
        return None
    return "".join(traceback.format_exception(kind, exc, tb))[-16384:]


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
