"""Sweeps end to end: the controller proposes, submits, follows and ends trials run by a real
agent; everything checked from the event log."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from cairn.bus import EventStore
from cairn.proto import subjects
from cairn.proto.events import (
    RunCanceled,
    RunCompleted,
    RunFailed,
    RunSubmitted,
    SweepEnded,
)
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._hyperdrive import (
    HyperDriveConfig,
    RandomParameterSampling,
    choice,
    get_sweep,
    loguniform,
)
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env

HERE = Path(__file__).parent


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(HERE / "train.py", src / "train.py")
    return src


async def run_script_at(
    script: Path, *args: str, env: dict[str, str], cwd: Path, timeout: float = 240
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-4000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


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


def overlap(runs: dict[str, list[Any]]) -> int:
    """The most trials alive at once, by stream order: from each child's submission to its
    end."""
    marks: list[tuple[int, int]] = []
    for records in runs.values():
        start = next(r.seq for r in records if isinstance(r.envelope.data, RunSubmitted))
        end = next(
            r.seq
            for r in records
            if isinstance(r.envelope.data, RunCompleted | RunFailed | RunCanceled)
        )
        marks += [(start, 1), (end, -1)]
    alive = most = 0
    for _, step in sorted(marks):
        alive += step
        most = max(most, alive)
    return most


async def test_a_hyperdrive_script_runs_twelve_trials_three_at_a_time(
    client: Client, client_settings: Settings, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=5)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script_at(
        HERE / "hyperdrive_script.py", str(source(tmp_path)), env=env, cwd=tmp_path
    )
    assert got["status"] == "Completed"
    children = got["children"]
    assert len(children) == 12 == len(got["hyperparameters"])
    runs = {c: await store.read(subjects.event(client.workspace, "run", c)) for c in children}
    assert all(
        isinstance(first.envelope.data, RunSubmitted)
        and first.envelope.data.parent_run_id == got["run_id"]
        for first, *_ in runs.values()
    )
    assert overlap(runs) <= 3
    # the best run is the one whose logged AUC is highest
    best_auc = {
        c: max(m["AUC"]) if isinstance(m["AUC"], list) else m["AUC"]
        for c, m in got["metrics"].items()
    }
    assert got["best"] == max(sorted(best_auc), key=lambda c: best_auc[c])
    assert got["sorted"][0]["run_id"] == got["best"]
    assert [r["best_primary_metric"] for r in got["sorted"]] == sorted(
        best_auc.values(), reverse=True
    )
    # each trial got its parameters as --name value
    for c, params in got["hyperparameters"].items():
        params = json.loads(params)
        assert set(params) == {"--learning_rate", "--n_estimators"}
        lr, n = params["--learning_rate"], params["--n_estimators"]
        assert math.exp(-6) <= lr <= math.exp(-1) and n in (10, 50, 100)
        expected = [1.0 - abs(lr - 0.05) - 1.0 / (n + step) for step in (1, 2)]
        assert got["metrics"][c]["AUC"] == pytest.approx(expected)
