"""Cairn's services and an agent in this process, over one server or a cluster (its URLs in
the settings): what the fault tests run their workload against."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from cairn.embedded._up import all_services
from cairn.service import run_services
from cairn.settings import Settings
from tests.conftest import JOB_SETTINGS, Agents


def service_settings(base: Settings, tmp: Path) -> Settings:
    """``base`` (the service user's connection) with the state, artifacts and datastore
    roots under ``tmp``, and the tests' short job leases."""
    extra: dict[str, object] = {
        "state_dir": str(tmp / "state"),
        "artifacts_dir": str(tmp / "artifacts"),
        "datastore_roots": str(tmp),
        **JOB_SETTINGS,
    }
    return msgspec.structs.replace(base, **extra)


@contextlib.asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[None]:
    """Every service of ``cairn up`` in this process until the block ends."""
    stop, ready = asyncio.Event(), asyncio.Event()
    factories = list(all_services().values())
    task = asyncio.create_task(run_services(settings, factories, stop=stop, ready=ready))
    try:
        done, _ = await asyncio.wait(
            [task, asyncio.create_task(ready.wait())], timeout=60, return_when="FIRST_COMPLETED"
        )
        if task in done:
            task.result()  # raises why the services stopped
        if not ready.is_set():
            raise TimeoutError("the services were not ready within 60 s")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def agent(settings: Settings, workspace: str, tmp: Path) -> AsyncIterator[Agents]:
    """One agent of compute ``local`` for ``workspace`` (settings: the agent user's)."""
    extra: dict[str, object] = {
        "workspace": workspace,
        "state_dir": str(tmp / "agent-state"),
        **JOB_SETTINGS,
    }
    pool = Agents(msgspec.structs.replace(settings, **extra))
    try:
        await pool.start(slots=4)
        yield pool
    finally:
        await pool.close()
