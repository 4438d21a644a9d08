"""Batch scoring with Azure ML v1's ParallelRunStep: a tabular dataset split into mini-batches
shared by worker jobs on real agents, init() once per worker process, run() per mini-batch,
every row's result committed once and gathered, in order, into one output file."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from cairn.bus import EventStore
from cairn.errors import NotFound
from cairn.proto import subjects
from cairn.proto.events import MiniBatchCommitted, MiniBatchLeased, RunAssigned
from cairn.proto.parallel import GetParallelRun, parallel_run_id
from cairn.proto.pipelines import GetPipeline
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
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


async def _parallel(ws: AsyncWorkspace, pid: str) -> dict[str, Any]:
    try:
        return (await ws.client.ask(GetParallelRun(parallel_id=pid, rows=False))).data
    except NotFound:
        return {}


async def _ended(ws: AsyncWorkspace, run_id: str) -> dict[str, Any]:
    for _ in range(1200):
        found = (await ws.client.ask(GetPipeline(run_id=run_id))).data
        if found["status"] in ("Completed", "Failed", "Canceled"):
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"pipeline {run_id} did not end")


@pytest.mark.timeout(300)
async def test_an_agent_killed_mid_batch_loses_and_doubles_no_row(
    client: Client,
    client_settings: Settings,
    agent_settings: Settings,
    ws: AsyncWorkspace,
    store: EventStore,
    procs: Procs,  # noqa: F811
    tmp_path: Path,
) -> None:
    """10,000 rows in mini-batches of 100 on two agents (one worker each); the agent whose
    worker holds mini-batch 50 (its first delivery hangs) is SIGKILLed there. The batch is
    handed out again once that attempt is lost, scored elsewhere, and the output holds every
    row exactly once."""
    homes = {name: tmp_path / name for name in ("a", "b")}
    agents = {
        name: await procs.agent(job_env(agent_settings, ws.name, home))
        for name, home in homes.items()
    }
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await _script(env, tmp_path, "hang", rows=10_000, size=100, nodes=2, wait=0)
    run_id = got["run_id"]
    pid = parallel_run_id(run_id, "score")
    for _ in range(1200):  # the first delivery of mini-batch 50 is being scored
        state = await _parallel(ws, pid)
        if state.get("deliveries", {}).get("50") == 1 and "50" in state["leases"]:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"mini-batch 50 was never handed out: {state}")
    holder = state["leases"]["50"]
    assigned = [
        e for e in await history(store, ws.name, holder["run_id"]) if isinstance(e, RunAssigned)
    ]
    agent_id = assigned[-1].agent_id
    victim = next(
        n for n, home in homes.items() if (home / "state" / "agent" / "work" / agent_id).exists()
    )
    agents[victim].kill()
    await agents[victim].wait()
    ended = await _ended(ws, run_id)
    assert ended["status"] == "Completed", ended
    parts = _check_rows(await _output(ws, run_id, tmp_path), 10_000)
    assert {p[3] for p in parts} == {"1"}  # init() once per worker process
    events = [r.envelope.data for r in await store.read(subjects.event(ws.name, "parallel", pid))]
    commits = [e for e in events if isinstance(e, MiniBatchCommitted)]
    assert sorted(e.batch for e in commits) == list(range(100))  # each committed once
    leases = [e for e in events if isinstance(e, MiniBatchLeased) and e.batch == 50]
    assert (leases[0].run_id, leases[0].attempt, leases[0].delivery) == (
        holder["run_id"],
        holder["attempt"],
        1,
    )
    assert len(leases) == 2 and leases[1].delivery == 2
    redone = next(e for e in commits if e.batch == 50)
    assert (redone.run_id, redone.attempt) == (leases[1].run_id, leases[1].attempt)
    assert (redone.run_id, redone.attempt) != (holder["run_id"], holder["attempt"])
    lost = [
        e for e in await history(store, ws.name, holder["run_id"]) if isinstance(e, RunAssigned)
    ]
    assert len(lost) == 2 and lost[1].agent_id != agent_id  # the lost worker ran again elsewhere


async def test_failed_items_over_error_threshold_fail_the_run(
    client: Client, client_settings: Settings, agents: Agents, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    """Every tenth row fails (run() returns no result for it): 100 failed items of 1,000
    pass with error_threshold=100 and abort the run with error_threshold=99."""
    await agents.start(slots=3)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    within = await _script(env, tmp_path, "fail", rows=1000, size=100, nodes=2, threshold=100)
    assert within["status"] == "Completed", within
    lines = await _output(ws, within["run_id"], tmp_path)
    assert [int(line.split()[0]) for line in lines] == [x for x in range(1000) if x % 10]
    pid = parallel_run_id(within["run_id"], "score")
    state = await _parallel(ws, pid)
    assert (state["failed_items"], state["failed_batches"], state["aborted"]) == (100, 10, "")
    over = await _script(env, tmp_path, "fail", rows=1000, size=100, nodes=2, threshold=99)
    assert over["status"] == "Failed", over
    state = await _parallel(ws, parallel_run_id(over["run_id"], "score"))
    assert "exceed error_threshold 99" in state["aborted"]
    assert state["committed"] < 10 or state["failed_items"] == 100
    assert over["steps"].get("score") in (None, "Skipped", "NotStarted")


async def test_a_file_dataset_is_scored_in_mini_batches_of_files(
    client: Client, client_settings: Settings, agents: Agents, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    """12 files in mini-batches of 5 by one node's two processes, the entry script's
    arguments, another output file name; the mini-batch with slow.txt times out on both
    tries: its items are failed (within error_threshold) and the rest are scored once."""
    await agents.start(slots=3)
    shutil.copytree(SRC, tmp_path / "src", dirs_exist_ok=True)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    script = str(Path(__file__).with_name("parallel_files_script.py"))
    got = await run_script(
        script, str(tmp_path / "src"), str(tmp_path / "lake"), env=env, cwd=tmp_path, timeout=400
    )
    assert got["status"] == "Completed", got
    gather = parallel_run_id(got["run_id"], "files")
    names = [f["path"] for f in await ws.run(gather).files()]
    found = [n for n in names if n.endswith("scored.txt")]
    assert found, names
    target = await ws.run(gather).download_file(found[0], tmp_path / "scored.txt")
    rows = [line.split() for line in target.read_text().splitlines()]
    # files in path order: f00..f09 (batches 0 and 1), then f10 and slow.txt (batch 2, failed)
    assert [r[0] for r in rows] == [f"f{i:02d}.txt" for i in range(10)]
    assert [int(r[1]) for r in rows] == list(range(10)) and {r[2] for r in rows} == {"ok"}
    state = (await ws.client.ask(GetParallelRun(parallel_id=gather))).data
    assert (state["batches"], state["failed_items"], state["failed_batches"]) == (3, 2, 1)
    assert "run_invocation_timeout" in state["errors"][0]["error"]
    steps = (await ws.client.ask(GetPipeline(run_id=got["run_id"]))).data["steps"]
    assert sorted(s["step"] for s in steps) == ["files", "files-w0", "files-w1"]


ROGUE = """\
import os
import sys

from cairn.errors import PermissionDenied
from cairn.proto.parallel import TakeMiniBatch
from cairn.sdk import Workspace
from cairn.sdk._async_parallel import send_worker

ws = Workspace()
take = TakeMiniBatch(
    command_id="rogue-take",
    run_id=os.environ["CAIRN_RUN_ID"],
    attempt=int(os.environ["CAIRN_ATTEMPT"]),
    step="score",
)
try:
    ws._run(send_worker(ws.core, take))
except PermissionDenied as exc:
    print("refused:", exc, flush=True)
    sys.exit(0 if "not a worker of parallel run step 'score'" in str(exc) else 3)
sys.exit(4)
"""


async def test_a_job_that_is_not_a_worker_of_the_step_takes_no_mini_batch(
    agents: Agents, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    """Its own run and attempt pass its agent's gate; the pipelines service refuses it, since
    its run is no worker of that step (a job of the same workspace cannot score, or fake, a
    parallel run's mini-batches)."""
    await agents.start()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "rogue.py").write_text(ROGUE)
    config = ScriptRunConfig(source_directory=tmp_path / "src", script="rogue.py")
    run_id = await submit(ws, "rogue", config)
    assert (await follow(ws, run_id, timeout=120))["status"] == "Completed"
