"""``cairn job create --file pipeline.yml --stream`` follows the steps; ``cairn job show``
lists them with status, duration and reuse."""

from __future__ import annotations

import json
from pathlib import Path

from cairn.rpc import Client
from cairn.settings import Settings
from tests.conftest import Agents
from tests.pipelines.helpers import TWO_STEPS, write_pipeline
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli


async def test_create_streams_the_steps_and_show_lists_them(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = write_pipeline(tmp_path, TWO_STEPS)
    code, out, err = await run_cli(
        "job", "create", "--file", str(path), "--stream", env=env, cwd=tmp_path
    )
    assert code == 0, err[-3000:]
    lines = err.splitlines()
    assert lines[0].startswith("pipeline ") and lines[0].endswith("submitted: prep, train")
    pid = lines[0].split()[1]
    assert any(line.startswith("[prep] Completed (run ") for line in lines)
    assert any(line.startswith("[train] Completed (run ") for line in lines)
    assert lines[-1] == f"pipeline {pid} Completed"
    assert "prep wrote ['a.csv']" in out and "a.csv = X,Y" in out

    shown = json.loads(await cli("job", "show", pid, "--json", env=env, cwd=tmp_path))
    assert shown["status"] == "Completed" and shown["properties"]["run_type"] == "pipeline"
    steps = {s["step"]: s for s in shown["pipeline"]["steps"]}
    assert [steps[n]["status"] for n in ("prep", "train")] == ["Completed", "Completed"]
    assert all(s["duration_s"] >= 0 for s in steps.values())

    again = await cli("job", "create", "--file", str(path), "--json", env=env, cwd=tmp_path)
    assert json.loads(again)["status"] == "Running"
    code, out, err = await run_cli(
        "job", "create", "-f", str(path), "--stream", env=env, cwd=tmp_path
    )
    assert code == 0 and "reuses run" in err
    third = err.splitlines()[0].split()[1]
    table = await cli("job", "show", third, env=env, cwd=tmp_path)
    header = next(line for line in table.splitlines() if line.startswith("STEP"))
    assert header.split() == ["STEP", "STATUS", "SECONDS", "RUN", "REUSES", "ERROR"]
    assert steps["prep"]["run_id"] in table  # the reused run, named in REUSES
