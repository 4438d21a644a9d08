"""The sweep controller SIGKILLed at random points, in its own process (``cairn serve
sweeps``), while ten sweeps run on a server of the test's own: each sweep still ends with
exactly its trials, none proposed, submitted or ended twice, and every proposal is the one the
sampler makes from the seed and the events before it, which is what an uninterrupted
controller proposes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import EventStore, connect
from cairn.domain import sweep
from cairn.embedded._up import all_services
from cairn.errors import Unavailable
from cairn.proto import subjects
from cairn.proto.commands import CreateWorkspace, ListRuns
from cairn.proto.events import RunSubmitted, SweepEnded, TrialEnded, TrialProposed
from cairn.rpc import Client
from cairn.sdk import (
    AsyncWorkspace,
    BayesianParameterSampling,
    HyperDriveConfig,
    RandomParameterSampling,
    ScriptRunConfig,
    choice,
    new_id,
    uniform,
)
from cairn.service import run_services
from cairn.services.sweeps._sampling import propose
from cairn.services.sweeps._service import trial_run_id
from tests.conftest import JOB_SETTINGS, Agents, own_server, settings_for
from tests.sweeps.test_sweeps import source

#: how long the controller is killed and restarted for
KILLING_S = 45.0


async def start_controller(settings: Any, state: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CAIRN_HOME": str(state.parent / "controller-home"),
        "CAIRN_STATE_DIR": str(state),
        "CAIRN_NATS_USER": settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": settings.nats_password or "",
        "CAIRN_LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cairn.cli import main; main()",
        "serve",
        "sweeps",
        "--nats-url",
        settings.nats_url,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def configs(tmp_path: Path) -> list[HyperDriveConfig]:
    """Ten small sweeps: random and Bayesian sampling by turns, each with a seed of its own,
    two or three trials, one to three at a time."""
    run = ScriptRunConfig(source_directory=source(tmp_path), script="train.py")
    space = {"learning_rate": uniform(0.0, 0.1), "n_estimators": choice(10, 20, 50)}
    common = {"run_config": run, "primary_metric_name": "AUC", "primary_metric_goal": "MAXIMIZE"}
    made = []
    for seed in range(1, 11):
        sampling = BayesianParameterSampling if seed % 2 == 0 else RandomParameterSampling
        made.append(
            HyperDriveConfig(
                hyperparameter_sampling=sampling(space, seed=seed),
                max_total_runs=2 + seed % 2,
                max_concurrent_runs=1 + seed % 3,
                **common,
            )
        )
    return made


async def check_sweep(store: EventStore, client: Client, run_id: str, total: int) -> None:
    records = await store.read(subjects.event(client.workspace, "sweep", run_id))
    events = [r.envelope.data for r in records]
    assert isinstance(events[-1], SweepEnded) and events[-1].status == "Completed"
    proposals = [e for e in events if isinstance(e, TrialProposed)]
    assert [p.index for p in proposals] == list(range(total))
    assert sorted(e.index for e in events if isinstance(e, TrialEnded)) == list(range(total))
    for n, proposal in enumerate(proposals):  # each one is what its prior events make
        before = events[: events.index(proposal)]
        state = sweep.AGGREGATE.fold(before)
        assert state.spec is not None
        made = propose(state.spec, state.seed, n, state.trials, set(proposal.seen))
        assert (made.parameters, made.sampled) == (proposal.parameters, proposal.sampled)
        assert all(state.trials[i].status is not None for i in proposal.seen)
    children = await client.ask(ListRuns(parent_run_id=run_id, limit=100, wait_s=0))
    ids = sorted(r["run_id"] for r in children.data["runs"])
    assert ids == sorted(trial_run_id(run_id, i) for i in range(total))
    for child in ids:
        history = await store.read(subjects.event(client.workspace, "run", child))
        assert sum(isinstance(r.envelope.data, RunSubmitted) for r in history) == 1


async def test_a_controller_killed_at_random_points_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5)
    stop = asyncio.Event()
    ready = asyncio.Event()
    service_settings = msgspec.structs.replace(
        settings,
        state_dir=str(tmp_path / "state"),
        artifacts_dir=str(tmp_path / "artifacts"),
        **JOB_SETTINGS,
    )
    factories = [f for name, f in all_services().items() if name != "sweeps"]
    services = asyncio.create_task(
        run_services(service_settings, factories, stop=stop, ready=ready)
    )
    controller: asyncio.subprocess.Process | None = None
    pool: Agents | None = None
    ws_conn = None
    try:
        await asyncio.wait_for(ready.wait(), 15)
        name = "k" + new_id()[:10]
        person = settings_for(server, service=False, **JOB_SETTINGS)
        ws_conn = await connect(person)
        client = Client(ws_conn, name)
        await client.send(CreateWorkspace(command_id=new_id(), name=name))
        agent = settings_for(
            server, service=False, agent=True, workspace=name, state_dir=str(tmp_path / "agent")
        )
        pool = Agents(agent)
        await pool.start(slots=4)
        ws = AsyncWorkspace(ws_conn, name, person)
        exp = await ws.experiment("killed")
        state = tmp_path / "controller-state"
        controller = await start_controller(settings, state)  # it answers the submissions
        totals = {}
        for config in configs(tmp_path):
            for _ in range(100):
                with contextlib.suppress(Unavailable):
                    run = await exp.submit(config)
                    break
                await asyncio.sleep(0.2)
            totals[run.id] = config.spec.limits.max_total_trials
        controller.kill()
        await controller.wait()
        rng = random.Random(20261129)
        kills = 1
        loop = asyncio.get_running_loop()
        started = loop.time()

        store = EventStore(conn)

        async def ended() -> bool:  # read from the log: no controller may be there to ask
            for run_id in totals:
                history = await store.read(subjects.event(name, "sweep", run_id))
                if not isinstance(history[-1].envelope.data, SweepEnded):
                    return False
            return True

        while loop.time() - started < KILLING_S and not await ended():
            controller = await start_controller(settings, state)
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            controller.kill()  # SIGKILL: no graceful anything
            await controller.wait()
            controller = None
            kills += 1
        assert kills >= 3
        controller = await start_controller(settings, state)  # left alone to finish
        for _ in range(600):
            if await ended():
                break
            await asyncio.sleep(0.2)
        for run_id, total in totals.items():
            await check_sweep(store, Client(ws_conn, name), run_id, total)
        await ws.close()
    finally:
        if controller is not None and controller.returncode is None:
            controller.kill()
            await controller.wait()
        if pool is not None:
            await pool.close()
        stop.set()
        with contextlib.suppress(Exception):
            await services
        if ws_conn is not None:
            await ws_conn.close()
        await conn.close()
        server.stop()
