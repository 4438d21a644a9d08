"""Pipelines run on agents: steps are child runs, bound by their outputs."""

from __future__ import annotations

from pathlib import Path

from cairn.proto.assets import DatastoreSpec
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from tests.conftest import Agents
from tests.pipelines.helpers import TWO_STEPS, logs, submit, wait_pipeline, write_pipeline


async def test_two_steps_bound_by_an_output(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    sent = await submit(ws, write_pipeline(tmp_path, TWO_STEPS))
    done = await wait_pipeline(ws, sent.run_id)
    steps = {s["step"]: s for s in done["steps"]}
    assert done["status"] == "Completed", done
    assert [steps[n]["status"] for n in ("prep", "train")] == ["Completed", "Completed"]
    train_out = await logs(ws, steps["train"]["run_id"])
    assert "a.csv = X,Y\n1,2" in train_out.replace("\r", "")
    assert f"parent {sent.run_id}" in train_out
    pipeline_run = await ws.run(sent.run_id).details()
    assert pipeline_run["status"] == "Completed"
    assert pipeline_run["display_name"] == "two steps" and pipeline_run["tags"] == {"team": "a"}
    assert pipeline_run["properties"]["description"] == "prep then train"
    for name in ("prep", "train"):
        child = await ws.run(steps[name]["run_id"]).details()
        assert child["parent_run_id"] == sent.run_id


PROMOTED = """\
type: pipeline
experiment_name: pipes
settings: {default_compute: local}
inputs:
  greeting: hello
outputs:
  report:
    type: uri_folder
    path: azureml://datastores/lake/paths/reports
jobs:
  write:
    command: echo ${{inputs.word}} > ${{outputs.out}}/report.txt
    inputs: {word: '${{parent.inputs.greeting}}'}
    outputs: {out: '${{parent.outputs.report}}'}
"""


async def test_a_pipeline_output_takes_its_declared_path(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)), None)
    await agents.start()
    sent = await submit(ws, write_pipeline(tmp_path / "p", PROMOTED))
    done = await wait_pipeline(ws, sent.run_id)
    assert done["status"] == "Completed", done
    assert done["outputs"] == [{"name": "report", "step": "write", "output": "out"}]
    assert (lake / "reports" / "report.txt").read_text().strip() == "hello"
