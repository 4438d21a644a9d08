"""The DAG: independent steps run at once, a failure stops what has not started (or only
what depends on it, with continue_on_step_failure), cancelling the pipeline stops its steps."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path

import msgspec

from cairn.bus import EventStore
from cairn.errors import NotFound
from cairn.proto import subjects
from cairn.proto.commands import FailRun
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, new_id
from cairn.service import run_services
from cairn.services.pipelines import PipelinesService
from cairn.settings import Settings
from tests.conftest import Agents
from tests.pipelines.helpers import submit, wait_pipeline, write_pipeline

STEP = """\
  {name}:
    command: {command}
{extra}"""


def pipeline(steps: dict[str, tuple[str, str]], settings: str = "") -> str:
    """``steps``: name -> (command, extra YAML lines for the step)."""
    body = "".join(
        STEP.format(name=name, command=command, extra=extra)
        for name, (command, extra) in steps.items()
    )
    return (
        "type: pipeline\nexperiment_name: dag\nsettings:\n  default_compute: local\n"
        f"{settings}jobs:\n{body}"
    )


WRITE = "echo {0} > ${{{{outputs.out}}}}/{0}.txt"
OUT = "    outputs:\n      out: {}\n"


def reads(*ups: str) -> str:
    lines = "".join(f"      {u}: ${{{{parent.jobs.{u}.outputs.out}}}}\n" for u in ups)
    return f"    inputs:\n{lines}"


DIAMOND = pipeline(
    {
        "a": (WRITE.format("a"), OUT),
        "b": ("sleep 1.5 && cat ${{inputs.a}}/a.txt && " + WRITE.format("b"), reads("a") + OUT),
        "c": ("sleep 1.5 && cat ${{inputs.a}}/a.txt && " + WRITE.format("c"), reads("a") + OUT),
        "d": ("cat ${{inputs.b}}/b.txt ${{inputs.c}}/c.txt", reads("b", "c")),
    }
)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_diamond_runs_its_middle_steps_at_once_on_two_agents(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=1)
    await agents.start(slots=1)
    sent = await submit(ws, write_pipeline(tmp_path / "p", DIAMOND))
    done = await wait_pipeline(ws, sent.run_id)
    assert done["status"] == "Completed", done
    steps = {s["step"]: s for s in done["steps"]}
    runs = {n: await ws.run(steps[n]["run_id"]).details() for n in "abcd"}
    jobs = {n: await ws.run(steps[n]["run_id"]).job() for n in "bc"}
    assert jobs["b"]["agent_id"] != jobs["c"]["agent_id"]
    b, c = runs["b"], runs["c"]
    # from the log: each middle step started before the other ended
    assert _time(b["start_time"]) < _time(c["end_time"])
    assert _time(c["start_time"]) < _time(b["end_time"])
    # and the ends of the diamond waited for them
    assert _time(runs["a"]["end_time"]) <= min(_time(b["start_time"]), _time(c["start_time"]))
    assert max(_time(b["end_time"]), _time(c["end_time"])) <= _time(runs["d"]["start_time"])


FAILING = {
    "bad": ("echo failing && exit 3", OUT),
    "after": ("cat ${{inputs.bad}}/x", reads("bad")),
    "other": ("sleep 1 && " + WRITE.format("other"), OUT),
    "last": ("cat ${{inputs.other}}/other.txt", reads("other")),
}


async def test_a_failed_step_fails_the_pipeline_and_its_downstream_never_starts(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    sent = await submit(ws, write_pipeline(tmp_path / "p", pipeline(FAILING)))
    done = await wait_pipeline(ws, sent.run_id)
    steps = {s["step"]: s for s in done["steps"]}
    assert done["status"] == "Failed" and "bad: Failed" in done["error"]
    assert steps["bad"]["status"] == "Failed"
    assert steps["after"]["status"] == "Skipped" and steps["after"]["run_id"] is None
    assert steps["last"]["status"] == "Skipped"  # it waited for other, which the failure stopped
    assert steps["other"]["status"] in ("Canceled", "Completed")
    assert (await ws.run(sent.run_id).details())["status"] == "Failed"
    children = [r async for r in ws.iter_runs(parent_run_id=sent.run_id)]
    assert sorted(r["run_id"] for r in children) == sorted(
        s["run_id"] for s in done["steps"] if s["run_id"]
    )


async def test_continue_on_step_failure_completes_the_independent_branch(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    text = pipeline(FAILING, settings="  continue_on_step_failure: true\n")
    sent = await submit(ws, write_pipeline(tmp_path / "p", text))
    done = await wait_pipeline(ws, sent.run_id)
    steps = {s["step"]: s["status"] for s in done["steps"]}
    assert done["status"] == "Failed"
    assert steps == {"bad": "Failed", "after": "Skipped", "other": "Completed", "last": "Completed"}


async def test_cancelling_the_pipeline_cancels_its_running_steps(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    text = pipeline({"slow": ("sleep 60", OUT), "next": ("echo next", reads("slow"))})
    sent = await submit(ws, write_pipeline(tmp_path / "p", text))
    async with asyncio.timeout(30):
        while True:
            steps = {s["step"]: s for s in (await ws.run(sent.run_id).pipeline())["steps"]}
            if steps["slow"]["status"] == "Running":
                slow = steps["slow"]["run_id"]
                with contextlib.suppress(NotFound):  # (not in the runs' read model yet)
                    if (await ws.run(slow).details())["status"] == "Running":
                        break
            await asyncio.sleep(0.2)
    await ws.run(sent.run_id).cancel("enough")
    done = await wait_pipeline(ws, sent.run_id)
    steps = {s["step"]: s["status"] for s in done["steps"]}
    assert done["status"] == "Canceled"
    assert steps == {"slow": "Canceled", "next": "Skipped"}
    assert (await ws.run(slow).details())["status"] == "Canceled"


async def test_a_pipeline_run_failed_by_hand_stops_the_pipeline(
    client: Client, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """Any end of the pipeline's own run (failed by hand here, or as lost) is a stop, not only a
    cancel: its running steps are canceled, the rest skipped, and the pipeline ends Failed."""
    await agents.start(slots=2)
    text = pipeline({"slow": ("sleep 60", OUT), "next": ("echo next", reads("slow"))})
    sent = await submit(ws, write_pipeline(tmp_path / "p", text))
    async with asyncio.timeout(30):
        while True:
            steps = {s["step"]: s for s in (await ws.run(sent.run_id).pipeline())["steps"]}
            if steps["slow"]["status"] == "Running":
                slow = steps["slow"]["run_id"]
                with contextlib.suppress(NotFound):  # (not in the runs' read model yet)
                    if (await ws.run(slow).details())["status"] == "Running":
                        break
            await asyncio.sleep(0.2)
    await ws.client.send(FailRun(command_id=new_id(), run_id=sent.run_id, error="by hand"))
    done = await wait_pipeline(ws, sent.run_id)
    steps = {s["step"]: s["status"] for s in done["steps"]}
    assert done["status"] == "Failed" and "by hand" in done["error"], done
    assert steps == {"slow": "Canceled", "next": "Skipped"}
    assert (await ws.run(slow).details())["status"] == "Canceled"


async def test_two_orchestrators_start_each_step_once(
    client: Client,
    ws: AsyncWorkspace,
    agents: Agents,
    service_settings: Settings,
    store: EventStore,
    tmp_path: Path,
) -> None:
    """A second replica beside the stack's own: both reconcile the same pipelines."""
    settings = msgspec.structs.replace(service_settings, state_dir=str(tmp_path / "replica"))
    stop, ready = asyncio.Event(), asyncio.Event()
    replica = asyncio.create_task(
        run_services(settings, [PipelinesService], stop=stop, ready=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await agents.start(slots=2)
        sent = [await submit(ws, write_pipeline(tmp_path / "p", DIAMOND)) for _ in range(3)]
        done = [await wait_pipeline(ws, s.run_id) for s in sent]
    finally:
        stop.set()
        await replica
    assert [d["status"] for d in done] == ["Completed"] * 3
    for pipeline in done:
        for step in pipeline["steps"]:
            history = await store.read(subjects.event(client.workspace, "run", step["run_id"]))
            kinds = [type(r.envelope.data).__name__ for r in history]
            if step["reused_run_id"]:  # the same pipeline again: a step another one completed
                assert "RunSubmitted" not in kinds and kinds.count("RunCompleted") == 1, kinds
                continue
            assert kinds.count("RunSubmitted") == 1 and kinds.count("RunAssigned") == 1, kinds
