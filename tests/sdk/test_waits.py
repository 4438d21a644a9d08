"""What a wait on a run shows: off a terminal a line for what changes, on a terminal one line
kept up to date with what to act on above it, a missing agent logged where nothing shows, the
place in the queue, and a last line with the run's id and status."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from cairn.errors import CairnError
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.sdk._waiting import Note, WaitDisplay, final_line
from tests.conftest import Agents
from tests.services.test_jobs import source, wait_status


def test_a_wait_off_a_terminal_prints_a_line_for_what_changes_and_the_end() -> None:
    out = io.StringIO()
    display = WaitDisplay("r1", show=True, stream=out, live=False)
    display.note(Note("queued on compute gpu"))  # nothing worth a line yet
    where = "queued on compute gpu: position 2 of 3 (1 agent, 0 free slots)"
    display.note(Note(where, where))
    display.note(Note(where, where))
    printed: list[str] = []
    display.wrap(printed.append)("partial line")
    display.end({"run_id": "r1", "status": "Failed", "error": "Traceback...\nValueError: x"})
    assert out.getvalue() == f"Run r1: {where}\n\nRun r1: Failed — ValueError: x\n"
    assert printed == ["partial line"]


def test_a_wait_on_a_terminal_keeps_one_line_and_an_alert_above_it() -> None:
    out = io.StringIO()
    display = WaitDisplay("r1", stream=out, live=True)
    assert display.shown, "a terminal shows the wait without show_output"
    display.note(Note("queued on compute gpu"))
    hint = "no agent serves compute gpu — start one with `cairn agent --compute gpu`"
    display.note(Note("queued on compute gpu: no agent", hint, alert=True))
    display.note(Note("queued on compute gpu: no agent", hint, alert=True))
    display.end({"run_id": "r1", "status": "Canceled", "error": ""})
    assert out.getvalue().count(hint) == 1
    assert out.getvalue().endswith(
        f"Run r1: {hint}\n\r\x1b[KRun r1: queued on compute gpu: no "
        "agent · 0s\r\x1b[KRun r1: Canceled\n"
    )


def test_a_quiet_wait_logs_a_missing_agent_once(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    display = WaitDisplay("r1", stream=out, live=False)
    hint = "no agent serves compute gpu — start one with `cairn agent --compute gpu`"
    for _ in range(3):
        display.note(Note("queued", hint, alert=True))
    display.end({"run_id": "r1", "status": "Completed"})
    assert out.getvalue() == ""
    assert capsys.readouterr().out.count("run_waits_for_an_agent") == 1
    assert (
        final_line({"run_id": "r", "status": "Completed", "error": "ignored"}) == "Run r: Completed"
    )


async def test_a_waiting_run_is_told_its_place_in_the_queue(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """One agent with one slot, busy: of two more jobs, the second waits second."""
    src = source(tmp_path, "import time; time.sleep(60)\n")
    await agents.start(slots=1)
    config = ScriptRunConfig(source_directory=src, script="job.py")
    busy = await submit(ws, "queue", config)
    await wait_status(ws, busy, lambda s: s == "Running")
    first, second = [await submit(ws, "queue", config) for _ in range(2)]
    out = io.StringIO()
    display = WaitDisplay(second, show=True, stream=out, live=False)
    waiting = asyncio.create_task(follow(ws, second, display=display, timeout=60))
    try:
        for _ in range(100):
            if "position 2 of 2" in out.getvalue():
                break
            await asyncio.sleep(0.1)
        assert (
            f"Run {second}: queued on compute local: position 2 of 2 (1 agent, 0 free slots)"
            in (out.getvalue())
        )
    finally:
        for run_id in (busy, first, second):
            try:
                await ws.run(run_id).cancel("done")
            except CairnError:
                pass
    details = await waiting
    assert details["status"] == "Canceled"
    assert out.getvalue().endswith(f"Run {second}: Canceled\n")
