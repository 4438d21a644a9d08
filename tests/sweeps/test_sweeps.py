"""Sweeps end to end: the controller proposes, submits, follows and ends trials run by a real
agent; everything checked from the event log."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import EventStore
from cairn.errors import InvalidInput
from cairn.proto import subjects
from cairn.proto.commands import GetRun, ListRuns
from cairn.proto.events import (
    RunCanceled,
    RunCompleted,
    RunFailed,
    RunSubmitted,
    SweepEnded,
    TrialProposed,
    TrialStopped,
)
from cairn.proto.jobs import JobSpec
from cairn.proto.sweeps import TrialTemplate
from cairn.rpc import Client
from cairn.sdk import (
    AsyncWorkspace,
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    RandomParameterSampling,
    ScriptRunConfig,
    choice,
    loguniform,
    new_id,
    uniform,
)
from cairn.sdk._hyperdrive import get_sweep
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


def script(tmp_path: Path, name: str = "train.py", *args: Any) -> ScriptRunConfig:
    src = tmp_path / "src"
    if not src.exists():
        source(tmp_path)
        shutil.copy(HERE / "curve.py", src / "curve.py")
    return ScriptRunConfig(source_directory=src, script=name, arguments=list(args))


async def run_sweep(ws: AsyncWorkspace, config: HyperDriveConfig) -> tuple[str, dict[str, Any]]:
    exp = await ws.experiment("sweeps")
    run = await exp.submit(config)
    return run.id, await wait_sweep(ws, run.id)


async def test_a_grid_enumerates_its_grid_once(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=4)
    config = HyperDriveConfig(
        run_config=script(tmp_path),
        hyperparameter_sampling=GridParameterSampling(
            {"learning_rate": choice(0.01, 0.05), "n_estimators": choice(10, 20, 30)}
        ),
        primary_metric_name="AUC",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=100,
        max_concurrent_runs=3,
    )
    _, view = await run_sweep(ws, config)
    assert view["status"] == "Completed"
    got = [
        (t["parameters"]["learning_rate"], t["parameters"]["n_estimators"]) for t in view["trials"]
    ]
    assert sorted(got) == sorted(itertools.product((0.01, 0.05), (10, 20, 30)))
    best = view["trials"][view["best_index"]]["parameters"]
    assert best == {"learning_rate": 0.05, "n_estimators": 30}


async def test_bayesian_sampling_with_a_seed_proposes_the_same_sequence_twice(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    config = HyperDriveConfig(
        run_config=script(tmp_path),
        hyperparameter_sampling=BayesianParameterSampling(
            {"learning_rate": uniform(0.0, 0.1), "n_estimators": choice(10, 20, 30)}, seed=42
        ),
        primary_metric_name="AUC",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=12,  # TPE models the results from the 11th proposal on
        max_concurrent_runs=1,
    )
    sequences = []
    for _ in range(2):
        run_id, view = await run_sweep(ws, config)
        assert view["status"] == "Completed"
        events = await sweep_events(store, ws.name, run_id)
        proposed = [(e.parameters, e.seen) for e in events if isinstance(e, TrialProposed)]
        sequences.append(proposed)
    assert len(sequences[0]) == 12
    assert sequences[0] == sequences[1]
    assert sequences[0][11][1] == list(range(11))  # each proposal saw every result before it


def bandit_expectation(decays: list[float], reports: int, slack: float) -> dict[int, int]:
    """The bandit policy's definition, trial by trial in proposal order (one at a time): trial
    t stops at the first interval k where its value is below the best value any trial up to t
    reported at k, divided by 1 + slack. (A stopped trial's later values never decide a best:
    an earlier trial was better there at every interval past the first.)"""
    stops: dict[int, int] = {}
    for t, d in enumerate(decays):
        for k in range(1, reports + 1):
            best = max(1.0 - decays[j] * (k - 1) for j in range(t + 1))
            if 1.0 - d * (k - 1) < best / (1 + slack):
                stops[t] = k
                break
    return stops


async def test_a_bandit_policy_stops_exactly_the_trials_its_definition_stops(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    config = HyperDriveConfig(
        run_config=script(tmp_path, "curve.py", "--reports", 8, "--pause", 0.4),
        hyperparameter_sampling=GridParameterSampling(
            {"decay": choice(0.0, 0.005, 0.02, 0.05)}, seed=3
        ),
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=4,
        max_concurrent_runs=1,
    )
    run_id, view = await run_sweep(ws, config)
    assert view["status"] == "Completed"
    events = await sweep_events(store, ws.name, run_id)
    decays = [float(e.parameters["decay"]) for e in events if isinstance(e, TrialProposed)]
    expected = bandit_expectation(decays, 8, 0.1)
    assert expected, "the grid's order stops no trial: the test would prove nothing"
    stopped = {e.index: e for e in events if isinstance(e, TrialStopped)}
    assert {i: e.interval for i, e in stopped.items()} == expected
    for i, e in stopped.items():
        assert e.policy == "bandit" and e.reason.startswith("bandit: accuracy")
        assert e.value < e.threshold == pytest.approx(e.reference / 1.1)
        assert view["trials"][i]["status"] == "Canceled"
        assert view["trials"][i]["stopped"]["interval"] == expected[i]
    for t in view["trials"]:
        if t["index"] not in expected:
            assert t["status"] == "Completed" and t["stopped"] is None and t["reports"] == 8


async def test_a_primary_metric_never_logged_fails_the_sweep_naming_it(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    config = HyperDriveConfig(
        run_config=script(tmp_path),
        hyperparameter_sampling=RandomParameterSampling(
            {"learning_rate": uniform(0.0, 0.1), "n_estimators": choice(10, 20)}, seed=1
        ),
        primary_metric_name="F1",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=2,
        max_concurrent_runs=2,
    )
    run_id, view = await run_sweep(ws, config)
    assert view["status"] == "Failed"
    assert "'F1'" in view["error"]
    parent = await ws.client.ask(GetRun(run_id=run_id, wait_s=0))
    for _ in range(100):  # the parent run ends right after the sweep
        if parent.data["status"] != "Running":
            break
        await asyncio.sleep(0.05)
        parent = await ws.client.ask(GetRun(run_id=run_id, wait_s=0))
    assert parent.data["status"] == "Failed" and "'F1'" in parent.data["error"]


def test_bad_sweeps_are_refused_by_name_before_anything_is_queued(tmp_path: Path) -> None:
    config = script(tmp_path)
    with pytest.raises(InvalidInput, match="parameter space is empty"):
        RandomParameterSampling({})
    with pytest.raises(InvalidInput, match=r"'lr' is 'beta', not a distribution"):
        RandomParameterSampling({"lr": "beta"})
    sampling = RandomParameterSampling({"learning_rate": uniform(0, 1)})
    with pytest.raises(InvalidInput, match="max_concurrent_trials"):
        HyperDriveConfig(
            run_config=config,
            hyperparameter_sampling=sampling,
            primary_metric_name="AUC",
            primary_metric_goal="MAXIMIZE",
            max_total_runs=4,
            max_concurrent_runs=-1,
        )


async def test_the_service_refuses_a_bad_sweep_before_creating_anything(
    ws: AsyncWorkspace, tmp_path: Path
) -> None:
    await ws.experiment("sweeps")
    trial = TrialTemplate(job=JobSpec(command=["python", "t.py", "--x", "${{search_space.x}}"]))
    good = {"x": {"type": "uniform", "min_value": 0, "max_value": 1}}
    spec = {
        "objective": {"primary_metric": "m", "goal": "maximize"},
        "limits": {"max_total_trials": 2},
    }
    bad = [
        ({**spec, "search_space": {}}, "search_space"),
        ({**spec, "search_space": {"x": {"type": "beta"}}}, "beta"),
        (
            {
                **spec,
                "search_space": good,
                "limits": {"max_total_trials": 2, "max_concurrent_trials": -1},
            },
            "max_concurrent_trials",
        ),
    ]
    for body, word in bad:
        command = {
            "type": "SubmitSweep",
            "command_id": new_id(),
            "run_id": new_id(),
            "experiment_name": "sweeps",
            "trial": msgspec.to_builtins(trial),
            "spec": body,
        }
        subject = subjects.command(ws.name, "sweep.submit")
        reply = await ws.conn.nc.request(subject, msgspec.json.encode(command), timeout=5)
        error = msgspec.json.decode(reply.data)
        assert error["type"] == "ErrorReply" and error["code"] == "invalid_input", error
        assert word in error["message"]
        runs = await ws.client.ask(ListRuns(experiment_name="sweeps", wait_s=0))
        assert runs.data["runs"] == []


async def test_trials_that_cannot_be_submitted_fail_the_sweep_saying_why(
    ws: AsyncWorkspace, tmp_path: Path
) -> None:
    run_config = script(tmp_path)
    run_config.environment = "no-such-env"
    config = HyperDriveConfig(
        run_config=run_config,
        hyperparameter_sampling=RandomParameterSampling({"learning_rate": uniform(0, 1)}),
        primary_metric_name="AUC",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=2,
    )
    _, view = await run_sweep(ws, config)
    assert view["status"] == "Failed"
    assert "no trial logged the primary metric 'AUC' (trial 0: " in view["error"]
    assert "no-such-env" in view["error"]


async def parent_status(ws: AsyncWorkspace, run_id: str) -> dict[str, Any]:
    for _ in range(200):  # the parent run ends right after its sweep
        data: dict[str, Any] = (await ws.client.ask(GetRun(run_id=run_id, wait_s=0))).data
        if data["status"] in ("Completed", "Failed", "Canceled"):
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"parent run {run_id} is still {data['status']}")


def slow(tmp_path: Path, **limits: Any) -> HyperDriveConfig:
    return HyperDriveConfig(
        run_config=script(tmp_path, "curve.py", "--reports", 40, "--pause", 0.25),
        hyperparameter_sampling=RandomParameterSampling({"decay": uniform(0.0, 0.01)}, seed=2),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=4,
        max_concurrent_runs=2,
        **limits,
    )


async def test_a_canceled_sweep_cancels_its_running_trials_and_ends_canceled(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    run = await (await ws.experiment("sweeps")).submit(slow(tmp_path))
    for _ in range(400):  # until both running trials have logged
        view = await run.sweep()
        if sum(1 for t in view["trials"] if t["status"] == "Running") == 2:
            break
        await asyncio.sleep(0.05)
    await run.cancel_sweep("enough")
    view = await wait_sweep(ws, run.id)
    assert view["status"] == "Canceled" and view["error"] == "enough"
    assert len(view["trials"]) == 2  # nothing proposed after the cancel
    assert {t["status"] for t in view["trials"]} == {"Canceled"}
    assert (await parent_status(ws, run.id))["status"] == "Canceled"


async def test_a_sweep_past_its_duration_cancels_its_trials_and_completes_with_them(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    run = await (await ws.experiment("sweeps")).submit(slow(tmp_path, max_duration_minutes=0.1))
    view = await wait_sweep(ws, run.id)
    assert view["status"] == "Completed"
    assert view["error"] == "timeout: ran past 6 s"
    assert {t["status"] for t in view["trials"]} == {"Canceled"}
    assert view["best_index"] is not None
    assert (await parent_status(ws, run.id))["status"] == "Completed"
