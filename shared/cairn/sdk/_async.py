"""The async core of the SDK. Every call is one idempotent command or one query."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cairn.bus import Connection
from cairn.bus import connect as bus_connect
from cairn.proto.commands import (
    CancelRun,
    CompleteRun,
    CreateExperiment,
    CreateRun,
    CreateWorkspace,
    FailRun,
    GetRun,
    ListExperiments,
    ListRuns,
    StartRun,
)
from cairn.rpc import Client
from cairn.settings import Settings, load_settings

__all__ = ["AsyncExperiment", "AsyncRun", "AsyncWorkspace", "connect", "new_id"]


def new_id() -> str:
    return uuid.uuid4().hex


class AsyncWorkspace:
    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.client = Client(conn, name)
        #: the highest stream sequence this client has caused; queries wait for it
        self.seen_seq = 0

    def _saw(self, seq: int) -> None:
        self.seen_seq = max(self.seen_seq, seq)

    async def create(self, description: str = "") -> None:
        reply = await self.client.send(
            CreateWorkspace(command_id=new_id(), name=self.name, description=description)
        )
        self._saw(reply.seq)

    async def experiment(self, name: str) -> AsyncExperiment:
        """Get or create the experiment called ``name``."""
        reply = await self.client.send(CreateExperiment(command_id=new_id(), name=name))
        self._saw(reply.seq)
        return AsyncExperiment(self, name, reply.aggregate_id)

    async def experiments(self) -> list[dict[str, Any]]:
        result = await self.client.ask(ListExperiments(min_seq=self.seen_seq))
        return list(result.data)


class AsyncExperiment:
    def __init__(self, workspace: AsyncWorkspace, name: str, experiment_id: str) -> None:
        self.workspace = workspace
        self.name = name
        self.id = experiment_id

    async def create_run(
        self, *, display_name: str | None = None, parent_run_id: str | None = None
    ) -> AsyncRun:
        run_id = new_id()
        reply = await self.workspace.client.send(
            CreateRun(
                command_id=new_id(),
                run_id=run_id,
                experiment_name=self.name,
                display_name=display_name,
                parent_run_id=parent_run_id,
            )
        )
        self.workspace._saw(reply.seq)
        return AsyncRun(self.workspace, run_id)

    async def start_run(self, *, display_name: str | None = None) -> AsyncRun:
        run = await self.create_run(display_name=display_name)
        await run.start()
        return run

    async def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        q = ListRuns(min_seq=self.workspace.seen_seq, experiment_name=self.name, limit=limit)
        return list((await self.workspace.client.ask(q)).data)


class AsyncRun:
    def __init__(self, workspace: AsyncWorkspace, run_id: str) -> None:
        self.workspace = workspace
        self.id = run_id

    async def _send(self, cmd: Any) -> None:
        reply = await self.workspace.client.send(cmd)
        self.workspace._saw(reply.seq)

    async def start(self) -> None:
        await self._send(StartRun(command_id=new_id(), run_id=self.id))

    async def complete(self) -> None:
        await self._send(CompleteRun(command_id=new_id(), run_id=self.id))

    async def fail(self, error: str = "") -> None:
        await self._send(FailRun(command_id=new_id(), run_id=self.id, error=error))

    async def cancel(self, reason: str = "") -> None:
        await self._send(CancelRun(command_id=new_id(), run_id=self.id, reason=reason))

    async def details(self) -> dict[str, Any]:
        result = await self.workspace.client.ask(
            GetRun(min_seq=self.workspace.seen_seq, run_id=self.id)
        )
        return dict(result.data)

    async def get_status(self) -> str:
        return str((await self.details())["status"])


@asynccontextmanager
async def connect(
    settings: Settings | None = None, *, workspace: str | None = None
) -> AsyncIterator[AsyncWorkspace]:
    """Connect to the workspace named by the settings (``cairn up`` writes them)."""
    settings = settings or load_settings()
    conn = await bus_connect(settings, name="cairn-sdk")
    try:
        yield AsyncWorkspace(conn, workspace or settings.workspace)
    finally:
        await conn.close()
