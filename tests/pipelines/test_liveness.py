"""The orchestrator's own run and its steps' submissions on a stack of the test's own: a
pipeline's run is not failed by the liveness check however long its steps take, and a step
whose submission meets no scheduler is submitted again, not failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cairn.embedded._up import all_services
from tests.pipelines.helpers import OwnStack, submit, wait_pipeline, write_pipeline

#: a run without a controller is lost after three missed beats: 0.9 s
BEAT_S = 0.3

SLOW = """\
type: pipeline
experiment_name: slow
settings: {default_compute: local}
jobs:
  wait:
    command: sleep 4
"""

QUICK = """\
type: pipeline
experiment_name: quick
settings: {default_compute: local}
jobs:
  first:
    command: echo one
  second:
    command: echo two
    depends_on: [first]
"""


async def test_a_pipeline_run_outlives_the_liveness_check(tmp_path: Path) -> None:
    stack = OwnStack(tmp_path, run_heartbeat_s=BEAT_S)
    try:
        ws = await stack.start(list(all_services()))
        await stack.agents.start()
        sent = await submit(ws, write_pipeline(tmp_path / "p", SLOW))
        done = await wait_pipeline(ws, sent.run_id, timeout=60)
        assert done["status"] == "Completed", done
        details = await ws.run(sent.run_id).details()
        assert details["status"] == "Completed", details
        assert details["controller"] == "pipeline"
    finally:
        await stack.close()


async def test_a_step_is_submitted_again_while_no_scheduler_answers(tmp_path: Path) -> None:
    stack = OwnStack(tmp_path)
    try:
        ws = await stack.start([name for name in all_services() if name != "scheduler"])
        await stack.agents.start()
        sent = await submit(ws, write_pipeline(tmp_path / "p", QUICK))
        async with asyncio.timeout(30):  # the step started; its submission met no one
            while not any(
                s["status"] == "Running" for s in (await ws.run(sent.run_id).pipeline())["steps"]
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # long enough for the request to time out (2 s) and be retried
        assert (await ws.run(sent.run_id).pipeline())["status"] == "Running"
        await stack.add(["scheduler"])
        done = await wait_pipeline(ws, sent.run_id, timeout=60)
        assert done["status"] == "Completed", done
    finally:
        await stack.close()
