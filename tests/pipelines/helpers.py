"""Pipeline files on disk and a wait for a pipeline run's end."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

from cairn.proto.pipelines import SubmitPipeline
from cairn.sdk import AsyncWorkspace, load_pipeline_file, submit_pipeline

PREP = """\
import argparse, os, sys
p = argparse.ArgumentParser()
p.add_argument("--raw")
p.add_argument("--out")
a = p.parse_args()
for name in sorted(os.listdir(a.raw)):
    text = open(os.path.join(a.raw, name)).read()
    open(os.path.join(a.out, name), "w").write(text.upper())
print("prep wrote", sorted(os.listdir(a.out)))
"""

TRAIN = """\
import argparse, os
from cairn.sdk import Run
p = argparse.ArgumentParser()
p.add_argument("--data")
a = p.parse_args()
for name in sorted(os.listdir(a.data)):
    print(name, "=", open(os.path.join(a.data, name)).read().strip())
run = Run.get_context()
print("parent", run.parent.id if run.parent else None)
"""

TWO_STEPS = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: two steps
experiment_name: pipes
description: prep then train
tags: {team: a}
settings:
  default_compute: azureml:local
inputs:
  raw:
    type: uri_folder
    path: ./data
jobs:
  prep:
    code: ./src
    command: python prep.py --raw ${{inputs.raw}} --out ${{outputs.data}}
    inputs:
      raw: ${{parent.inputs.raw}}
    outputs:
      data:
        mode: rw_mount
  train:
    code: ./src
    command: python train.py --data ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
"""


def write_pipeline(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """The pipeline file and its code (``src/``) and data (``data/``) in ``folder``."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "src" / "prep.py").write_text(PREP)
    (folder / "src" / "train.py").write_text(TRAIN)
    (folder / "data" / "a.csv").write_text("x,y\n1,2\n")
    for name, content in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(content))
    path = folder / "pipeline.yml"
    path.write_text(text)
    return path


async def submit(ws: AsyncWorkspace, path: Path) -> SubmitPipeline:
    return await submit_pipeline(ws, load_pipeline_file(path))


async def wait_pipeline(ws: AsyncWorkspace, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The pipeline once it has ended."""
    async with asyncio.timeout(timeout):
        while True:
            found = await ws.run(run_id).pipeline()
            if found["status"] in ("Completed", "Failed", "Canceled"):
                return found
            await asyncio.sleep(0.2)


async def logs(ws: AsyncWorkspace, run_id: str) -> str:
    chunks: list[str] = []
    await ws.run(run_id).print_logs(chunks.append)
    return "".join(chunks)
