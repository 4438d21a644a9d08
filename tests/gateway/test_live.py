"""The run page's live stream ends with its run and is bounded: a finished run's stream sends
what there is, then ``end``, and closes; a person's 17th open stream is refused."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from cairn.sdk import AsyncWorkspace
from cairn.services.gateway._live import LIVE, MOST_PER_PERSON
from tests.gateway.test_runs_api import _until


async def _events(lines: AsyncIterator[str]) -> list[tuple[str, Any]]:
    """Every event of the stream, ``(kind, data)``, until it closes."""
    found: list[tuple[str, Any]] = []
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            found.append((event, json.loads(line[6:])))
    return found


async def test_a_finished_runs_stream_sends_what_there_is_then_ends(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    run = await (await ws.experiment("ended")).start_run()
    for step in range(3):
        run.log("loss", float(step), step=step)
    await run.complete()
    url = f"/api/w/{ws.name}/runs/{run.id}/live"
    async with browser_http.stream("GET", url, params={"logs": "true"}) as response:
        assert response.status_code == 200
        events = await _events(response.aiter_lines())  # returns: the server closed it
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert [p[2] for kind, data in events if kind == "metrics" for p in data["loss"]] == [
        0.0,
        1.0,
        2.0,
    ]
    assert [data["status"] for kind, data in events if kind == "run"] == ["Completed"]
    output = await browser_http.get(f"/api/w/{ws.name}/runs/{run.id}/output")
    assert output.json() == {"text": "", "truncated": False}


async def test_a_running_runs_stream_ends_when_the_run_does(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    run = await (await ws.experiment("ending")).start_run()
    run.log("loss", 1.0, step=0)
    await run.flush()
    url = f"/api/w/{ws.name}/runs/{run.id}/live"
    async with browser_http.stream("GET", url, timeout=60) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line == "event: run":
                break
        run.log("loss", 0.5, step=1)
        await run.complete()
        events = await _events(lines)
    assert events[-1][0] == "end"
    assert ("run", "Completed") in [(kind, data.get("status")) for kind, data in events]
    sent = [p[2] for kind, data in events if kind == "metrics" for p in data["loss"]]
    assert sent[-1] == 0.5

    async def released() -> bool:
        return LIVE.streams == 0 and not LIVE.feeds and not LIVE.by_person

    await _until(released, "the ended stream left its count or feeds behind")


async def test_a_person_has_at_most_16_live_streams_open(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    run = await (await ws.experiment("many")).start_run()
    url = f"/api/w/{ws.name}/runs/{run.id}/live"
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(MOST_PER_PERSON):
            opened = await streams.enter_async_context(browser_http.stream("GET", url))
            assert opened.status_code == 200
        refused = await browser_http.get(url)
        assert refused.status_code == 429
        assert "too many live pages open" in refused.json()["message"]
    async with browser_http.stream("GET", url) as again:  # closed ones count no more
        assert again.status_code == 200
    await run.complete()

    async def released() -> bool:
        return LIVE.streams == 0 and not LIVE.by_person

    await _until(released, "the streams' counts outlived them")
