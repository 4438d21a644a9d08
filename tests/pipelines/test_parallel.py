"""Batch scoring with Azure ML v1's ParallelRunStep: a tabular dataset split into mini-batches
shared by worker jobs on real agents, init() once per worker process, run() per mini-batch,
every row's result committed once and gathered, in order, into one output file."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from cairn.bus import EventStore
from cairn.proto.events import MiniBatchCommitted, MiniBatchLeased, RunAssigned
from cairn.proto.parallel import GetParallelRun, parallel_run_id
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.services.test_job_processes import Procs, job_env, procs  # noqa: F401
from tests.services.test_jobs import history

SRC = Path(__file__).with_name("parallel_src")
SCRIPT = Path(__file__).with_name("parallel_script.py")


async def _script(
    env: dict[str, str], tmp_path: Path, mode: str, rows: int, size: int, nodes: int, **kw: Any
) -> dict[str, Any]:
    shutil.copytree(SRC, tmp_path / "src", dirs_exist_ok=True)
    args = [str(rows), str(size), str(nodes), str(kw.get("threshold", -1)), str(kw.get("wait", 1))]
    return await run_script(
        str(SCRIPT),
        str(tmp_path / "src"),
        str(tmp_path / "lake"),
        mode,
        *args,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )


async def _output(ws: AsyncWorkspace, run_id: str, tmp_path: Path) -> list[str]:
    gather = parallel_run_id(run_id, "score")
    names = [f["path"] if isinstance(f, dict) else str(f) for f in await ws.run(gather).files()]
    found = [n for n in names if n.endswith("parallel_run_step.txt")]
    assert found, names
    target = await ws.run(gather).download_file(found[0], tmp_path / "out.txt")
    return target.read_text().splitlines()


def _check_rows(lines: list[str], rows: int) -> list[list[str]]:
    parts = [line.split() for line in lines]
    assert [int(p[0]) for p in parts] == list(range(rows))  # every row once, in order
    assert all(int(p[1]) == 2 * int(p[0]) for p in parts)
    return parts


async def test_rows_are_scored_once_by_two_workers_that_init_once(
    client: Client, client_settings: Settings, agents: Agents, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    await agents.start(slots=3)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await _script(env, tmp_path, "plain", rows=1000, size=100, nodes=2)
    assert got["status"] == "Completed", got
    assert got["steps"] == {
        "score-w0": "Completed",
        "score-w1": "Completed",
        "score": "Completed",
        "count": "Completed",
    }
    parts = _check_rows(await _output(ws, got["run_id"], tmp_path), 1000)
    assert {p[3] for p in parts} == {"1"}  # init() ran once in each worker's process
    by_batch = {int(p[0]) // 100: p[2] for p in parts}
    assert all(by_batch[int(p[0]) // 100] == p[2] for p in parts)  # one worker per batch
    assert 1 <= len({p[2] for p in parts}) <= 2
    state = (
        await ws.client.ask(
            GetParallelRun(parallel_id=parallel_run_id(got["run_id"], "score"), rows=False)
        )
    ).data
    assert state["batches"] == 10 and state["committed"] == 10 and state["failed_items"] == 0
