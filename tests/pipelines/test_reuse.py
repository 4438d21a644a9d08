"""Step reuse: keyed on what a step consumes, so an unchanged pipeline reuses every step and a
file changed in place in a datastore folder reruns its consumer and what is downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.proto.assets import DatastoreSpec
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from tests.conftest import Agents
from tests.pipelines.helpers import logs, submit, wait_pipeline, write_pipeline

REUSE = """\
type: pipeline
experiment_name: reuse
settings:
  default_compute: local
jobs:
  prep:
    code: ./src
    command: python prep.py --raw ${{inputs.raw}} --out ${{outputs.data}}
    inputs:
      raw:
        type: uri_folder
        path: azureml://datastores/lake/paths/raw
    outputs:
      data: {}
  train:
    code: ./src
    command: python train.py --data ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
  other:
    command: echo other ${{inputs.n}}
    inputs:
      n: 3
"""


async def _run(ws: AsyncWorkspace, path: Path) -> dict[str, dict[str, Any]]:
    sent = await submit(ws, path)
    done = await wait_pipeline(ws, sent.run_id)
    assert done["status"] == "Completed", done
    return {s["step"]: s for s in done["steps"]}


async def test_unchanged_steps_are_reused_and_a_changed_file_reruns_its_consumers(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    (lake / "raw" / "a.csv").write_text("x,y\n1,2\n")
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)), None)
    await agents.start()
    path = write_pipeline(tmp_path / "p", REUSE)

    first = await _run(ws, path)
    assert all(not s["reused_run_id"] for s in first.values())

    second = await _run(ws, path)  # nothing changed: every step stands for the first run's
    for name in ("prep", "train", "other"):
        assert second[name]["reused_run_id"] == first[name]["run_id"]
        child = await ws.run(second[name]["run_id"]).details()
        assert child["status"] == "Completed"
        assert child["properties"]["reused_run_id"] == first[name]["run_id"]
        assert "same code" in child["properties"]["reuse_reason"]

    (lake / "raw" / "a.csv").write_text("x,y\n3,4\n")  # the same path, new bytes
    third = await _run(ws, path)
    assert not third["prep"]["reused_run_id"] and not third["train"]["reused_run_id"]
    assert third["other"]["reused_run_id"] == first["other"]["run_id"]
    assert "a.csv = X,Y\n3,4" in (await logs(ws, third["train"]["run_id"])).replace("\r", "")

    forced = REUSE.replace(
        "  default_compute: local\n", "  default_compute: local\n  force_rerun: true\n"
    )
    fourth = await _run(ws, write_pipeline(tmp_path / "p", forced))
    assert all(not s["reused_run_id"] for s in fourth.values())

    fixed = REUSE.replace(
        "    command: echo other", "    allow_reuse: false\n    command: echo other"
    )
    fifth = await _run(ws, write_pipeline(tmp_path / "p", fixed))
    assert fifth["prep"]["reused_run_id"] and not fifth["other"]["reused_run_id"]


MODEL = """\
type: pipeline
experiment_name: reuse
settings: {default_compute: local}
jobs:
  score:
    command: ls ${{inputs.m}}
    inputs:
      m: {type: custom_model, path: 'azureml:clf:latest'}
"""


async def test_a_model_input_reruns_once_a_new_version_is_registered(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """The key holds the version the input names when the step starts (as the scheduler pins
    it) and that version's files, not the words ``latest``."""
    exp = await ws.experiment("models")
    (tmp_path / "m.bin").write_bytes(b"weights")
    run = await exp.start_run()
    await run.upload_file("outputs/m.bin", tmp_path / "m.bin")
    await run.complete()
    await ws.models.register("clf", "outputs/m.bin", run_id=run.id)
    await agents.start()
    path = write_pipeline(tmp_path / "p", MODEL)
    first = await _run(ws, path)
    second = await _run(ws, path)
    assert second["score"]["reused_run_id"] == first["score"]["run_id"]
    await ws.models.register("clf", "outputs/m.bin", run_id=run.id)
    third = await _run(ws, path)
    assert not third["score"]["reused_run_id"]
