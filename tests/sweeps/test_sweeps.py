"""Sweeps end to end: the controller proposes, submits, follows and ends trials run by a real
agent; everything checked from the event log."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from cairn.bus import EventStore
from cairn.proto import subjects
from cairn.proto.events import (
    SweepEnded,
)
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._hyperdrive import (
    HyperDriveConfig,
    RandomParameterSampling,
    choice,
    get_sweep,
    loguniform,
)
from tests.conftest import Agents

HERE = Path(__file__).parent


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(HERE / "train.py", src / "train.py")
    return src


async def wait_sweep(ws: AsyncWorkspace, run_id: str, timeout: float = 120) -> dict[str, Any]:
    for _ in range(int(timeout / 0.1)):
        view = await get_sweep(ws, run_id)
        if view["status"] != "Running":
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"sweep {run_id} still running: {view}")


async def sweep_events(store: EventStore, ws: str, run_id: str) -> list[Any]:
    return [r.envelope.data for r in await store.read(subjects.event(ws, "sweep", run_id))]


async def test_a_random_sweep_runs_its_trials_within_the_concurrency_limit(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=4)
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(source_directory=source(tmp_path), script="train.py"),
        hyperparameter_sampling=RandomParameterSampling(
            {"learning_rate": loguniform(-6, -1), "n_estimators": choice(10, 50, 100)}, seed=7
        ),
        primary_metric_name="AUC",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=4,
        max_concurrent_runs=2,
    )
    exp = await ws.experiment("sweeps")
    run = await exp.submit(config)
    view = await wait_sweep(ws, run.id)
    assert view["status"] == "Completed", view
    assert len(view["trials"]) == 4
    events = await sweep_events(store, ws.name, run.id)
    assert isinstance(events[-1], SweepEnded)
