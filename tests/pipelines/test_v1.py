"""Azure ML v1's Python pipeline API, run by a script as a data scientist would: the graph
from PipelineData bindings, a registered tabular dataset as a named input, reuse of unchanged
steps, a file of the dataset changed in place rerunning its consumer, a new version rerunning
both steps, and reuse turned off."""

from __future__ import annotations

import shutil
from pathlib import Path

from cairn.rpc import Client
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env

SRC = Path(__file__).with_name("v1_src")
SCRIPT = Path(__file__).with_name("v1_script.py")


async def test_python_steps_joined_by_pipeline_data_run_and_are_reused(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    shutil.copytree(SRC, tmp_path / "src")
    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    (lake / "raw" / "a.csv").write_text("x\n1\n2\n")
    (lake / "raw" / "b.csv").write_text("x\n3\n")
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script(
        str(SCRIPT), str(tmp_path / "src"), str(lake), env=env, cwd=tmp_path, timeout=600
    )
    first, again, changed = got["first"], got["again"], got["changed"]
    for label in ("first", "again", "changed", "new_version", "no_reuse", "regenerate"):
        assert got[label]["status"] == "Completed", (label, got[label])
        assert got[label]["children"] == got[label]["steps"], label
        assert got[label]["train_parent"] == got[label]["run_id"], label
    assert first["reused"] == {"prep": False, "train": False}
    assert again["reused"] == {"prep": True, "train": True}
    # a file changed in place: the version's key changes, so prep runs again; it reads the
    # bytes its version names (the agent's copy), writes the same output, and train, whose
    # input did not change, is reused
    assert changed["reused"] == {"prep": False, "train": True}
    assert "sum 18" in first["prep_log"] and "sum 18" in changed["prep_log"]
    # the dataset registered again over the changed file: both steps run on the new bytes
    assert got["versions"][1] == got["versions"][0] + 1
    assert got["new_version"]["reused"] == {"prep": False, "train": False}
    assert "sum 309" in got["new_version"]["prep_log"]
    assert got["no_reuse"]["reused"] == {"prep": False, "train": False}
    assert got["regenerate"]["reused"] == {"prep": False, "train": False}
    assert first["prep"] == [s for s in first["steps"] if s in first["prep"]]
    assert got["unknown_parameter"][0] == "InvalidInput"
    assert "'nope'" in got["unknown_parameter"][1]
