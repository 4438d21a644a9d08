"""Registered components: ``cairn component create --file`` versions a command component in
the registry (like an environment), and a pipeline step names one (``azureml:train:1``,
``train@latest``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.errors import InvalidBinding
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, load_pipeline_file, lookup_components, submit_pipeline
from cairn.settings import Settings
from tests.conftest import Agents
from tests.pipelines.helpers import logs, wait_pipeline
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli

COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
type: command
name: greet
display_name: Greet
code: ./src
command: python greet.py --who ${{inputs.who}} --times ${{inputs.times}} --out ${{outputs.said}}
environment: azureml:cairn-python-3.11@latest
inputs:
  who: {type: string}
  times: {type: integer, default: 2}
outputs:
  said: {type: uri_folder}
"""

GREET = """\
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--who")
p.add_argument("--times", type=int)
p.add_argument("--out")
a = p.parse_args()
text = " ".join(["{word}", a.who] * a.times)
print(text)
open(os.path.join(a.out, "said.txt"), "w").write(text)
"""

PIPELINE = """\
type: pipeline
experiment_name: components
settings: {default_compute: local}
jobs:
  first:
    component: azureml:greet:1
    inputs: {who: ada}
  latest:
    component: greet@latest
    inputs: {who: bob, times: 1}
  read:
    command: cat ${{inputs.said}}/said.txt
    inputs:
      said: ${{parent.jobs.first.outputs.said}}
"""


def _component(folder: Path, word: str) -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "greet.py").write_text(GREET.replace("{word}", word))
    path = folder / "greet.yml"
    path.write_text(COMPONENT)
    return path


async def test_registered_components_version_and_run_as_steps(
    client: Client,
    client_settings: Settings,
    ws: AsyncWorkspace,
    agents: Agents,
    tmp_path: Path,
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = _component(tmp_path / "c", "hello")
    assert (
        await cli("component", "create", "--file", str(path), env=env, cwd=tmp_path)
    ).strip() == "greet:1"
    again = await cli("component", "create", "-f", str(path), env=env, cwd=tmp_path)
    assert again.strip() == "greet:1"  # the same definition: no new version
    _component(tmp_path / "c", "bye")
    assert (
        await cli("component", "create", "-f", str(path), env=env, cwd=tmp_path)
    ).strip() == "greet:2"
    shown = json.loads(await cli("component", "show", "greet", "--json", env=env, cwd=tmp_path))
    assert shown["version"] == 2 and shown["spec"]["inputs"]["times"]["default"] == 2

    await agents.start()
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text(PIPELINE)
    with pytest.raises(InvalidBinding, match=r"^jobs\.first\.component: "):
        load_pipeline_file(pipeline)  # a registered component must be looked up first
    loaded = load_pipeline_file(pipeline, await lookup_components(ws, pipeline))
    sent = await submit_pipeline(ws, loaded)
    done = await wait_pipeline(ws, sent.run_id)
    assert done["status"] == "Completed", done
    steps = {s["step"]: s for s in done["steps"]}
    assert "hello ada hello ada" in await logs(ws, steps["first"]["run_id"])
    assert "bye bob" in await logs(ws, steps["latest"]["run_id"])
    assert "hello ada hello ada" in await logs(ws, steps["read"]["run_id"])
    first = await ws.run(steps["first"]["run_id"]).details()
    assert first["tags"]["component"] == "greet:1" and first["display_name"] == "Greet"

    pipeline.write_text(PIPELINE.replace("azureml:greet:1", "azureml:greet:7"))
    with pytest.raises(InvalidBinding, match=r"^jobs\.first\.component: .*version 7"):
        await lookup_components(ws, pipeline)
