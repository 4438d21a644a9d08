"""A launch that raises what the agent did not expect (as reading a container's first
process once did): nothing of it runs on, what it opened is closed, and its attempt ends
lost, naming the cause, so the run is queued again and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cairn.bus import EventStore
from cairn.proto.events import RunCompleted, RunRequeued
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.services.agent._backends import ProcessBackend
from tests.conftest import Agents
from tests.services.test_jobs import history, source


async def test_an_unexpected_launch_error_loses_the_attempt_naming_it(
    ws: AsyncWorkspace,
    agents: Agents,
    store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ProcessBackend.launch
    gates: list[Path] = []

    async def launch(self: ProcessBackend, *args: Any, **kwargs: Any) -> Any:
        if not gates:  # the first launch fails as a non-UTF-8 process name made it fail
            gates.append(Path(args[3]["CAIRN_AGENT_SOCKET"]).parent)
            raise UnicodeDecodeError("utf-8", b"ent\xffry", 3, 4, "invalid start byte")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(ProcessBackend, "launch", launch)
    src = source(tmp_path, "print('ran', flush=True)\n")
    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    assert not gates[0].exists(), "the first attempt's socket folder is closed"
    events = await history(store, ws.name, run_id)
    requeued = [e for e in events if isinstance(e, RunRequeued)]
    assert len(requeued) == 1 and requeued[0].attempt == 1
    assert "could not start the job" in requeued[0].reason
    assert "UnicodeDecodeError" in requeued[0].reason
    assert isinstance(events[-1], RunCompleted) and events[-1].attempt == 2
