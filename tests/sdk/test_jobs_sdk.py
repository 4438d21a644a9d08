"""The seeds' ScriptRunConfig job through the sync SDK, run by a real agent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cairn.bus import EventStore
from cairn.proto import subjects
from cairn.proto.events import ArtifactCommitted, RunSubmitted
from cairn.rpc import Client
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.services.test_jobs import history

TRAINING = Path(__file__).with_name("training")


def _diabetes_like(path: Path, rows: int = 400) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 4))
    y = X @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.5, size=rows) > 0
    data = np.column_stack([X, y.astype(float)])
    np.savetxt(path, data, delimiter=",", header="a,b,c,d,Diabetic", comments="", fmt="%.5f")


async def test_the_seeds_training_job_runs_on_local_and_registers_its_model(
    client: Client, client_settings: Settings, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    folder = tmp_path / "diabetes-training"
    shutil.copytree(TRAINING, folder)
    _diabetes_like(folder / "diabetes.csv")
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("jobs_script.py", str(folder), env=env, cwd=tmp_path, timeout=180)
    assert got["status"] == "Completed"
    m = got["metrics"]
    assert m["observations"] == 400 and m["Regularization Rate"] == 0.1
    assert 0.8 < m["Accuracy"] <= 1.0 and 0.8 < m["AUC"] <= 1.0
    assert got["files"] == ["outputs/diabetes_model.pkl", "user_logs/std_log.txt"]
    assert got["model"] == ["diabetes_model", 1, True]
    assert got["loaded"] == "LogisticRegression"
    assert got["again"][0] == "Completed"
    areas = set()
    for run_id in (got["run_id"], got["again"][1]):
        events = await history(store, client.workspace, run_id)
        areas |= {e.job.snapshot_area for e in events if isinstance(e, RunSubmitted)}
    assert len(areas) == 1, "an unchanged folder made a second snapshot"
    staged = await store.read(subjects.event(client.workspace, "staging", areas.pop()))
    assert len([r for r in staged if isinstance(r.envelope.data, ArtifactCommitted)]) == 1
