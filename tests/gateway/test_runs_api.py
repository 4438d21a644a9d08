"""The JSON API of runs and the live stream behind the run page, over HTTP: the same data as
the pages, the same errors, and a live stream that leaves nothing behind when its reader goes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from cairn.bus import Connection
from cairn.proto.registry import ListModels
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway._live import LIVE, history_pages


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float)


ANY_TIME = _AnyTime()


async def _until(check: Any, what: str, within_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.1)


async def test_runs_run_history_and_files_as_json(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    exp = await ws.experiment("api")
    ids = []
    for i in range(3):
        run = await exp.start_run(display_name=f"r{i}")
        await run.set_tags({"i": str(i)})
        for step in range(5):
            run.log("loss", i + step / 10, step=step)
        await run.flush()
        ids.append(run.id)
    (tmp_path / "a.txt").write_text("alpha")
    await run.upload_file("out/a.txt", tmp_path / "a.txt")
    await run.complete()
    await run.get_metrics()
    base = f"/api/w/{ws.name}"

    listing = f"{base}/runs"
    first = (await browser_http.get(listing, params={"experiment": "api", "limit": 2})).json()
    assert [r["display_name"] for r in first["runs"]] == ["r2", "r1"]
    assert first["next_cursor"]
    rest = await browser_http.get(
        listing, params={"experiment": "api", "limit": 2, "cursor": first["next_cursor"]}
    )
    assert [r["display_name"] for r in rest.json()["runs"]] == ["r0"]
    assert rest.json()["next_cursor"] is None

    one = (await browser_http.get(f"{base}/runs/{ids[2]}")).json()
    assert one["status"] == "Completed" and one["tags"] == {"i": "2"}
    assert one["job"] is None and one["metrics"] == ["loss"]

    history = await browser_http.get(f"{base}/runs/{ids[1]}/history", params={"name": "loss"})
    assert [p[2] for p in history.json()["points"]] == [1.0, 1.1, 1.2, 1.3, 1.4]
    later = await browser_http.get(
        f"{base}/runs/{ids[1]}/history", params={"name": "loss", "after_step": 2}
    )
    assert [p[0] for p in later.json()["points"]] == [3, 4]
    assert later.json()["next_cursor"] is None

    files = (await browser_http.get(f"{base}/runs/{ids[2]}/files")).json()
    assert [(f["path"], f["size"]) for f in files] == [("out/a.txt", 5)]
    body = await browser_http.get(f"{base}/runs/{ids[2]}/file", params={"path": "out/a.txt"})
    assert body.content == b"alpha"
    assert "attachment" in body.headers["content-disposition"]


async def test_bad_requests_get_typed_errors(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    exp = await ws.experiment("errs")
    run = await exp.start_run()
    await run.complete()
    base = f"/api/w/{ws.name}"
    missing = await browser_http.get(f"{base}/runs/nosuchrun")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    for runs in (run.id, ",".join([run.id] * 2), ",".join(f"r{i}" for i in range(11))):
        refused = await browser_http.get(f"{base}/compare", params={"runs": runs})
        assert refused.status_code == 400, refused.text
    page = await browser_http.get(
        f"/w/{ws.name}/compare", params={"runs": run.id}, headers={"accept": "text/html"}
    )
    assert page.status_code == 400 and "compare takes 2 to 10 runs, not 1" in page.text
    limit = await browser_http.get(f"{base}/runs", params={"experiment": "errs", "limit": 0})
    assert limit.status_code == 400
    nofile = await browser_http.get(f"{base}/runs/{run.id}/file", params={"path": "../x"})
    assert nofile.status_code == 400


async def _read_events(lines: AsyncIterator[str], wanted: set[str]) -> dict[str, Any]:
    """The first event of each kind in ``wanted``, as the stream sends them."""
    found: dict[str, Any] = {}
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event in wanted:
            found.setdefault(event, json.loads(line[6:]))
            if wanted <= found.keys():
                return found
    raise AssertionError(f"the stream ended before {wanted - found.keys()}")


async def test_a_live_stream_sends_new_points_and_leaves_nothing_when_its_reader_goes(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient, conn: Connection
) -> None:
    exp = await ws.experiment("live")
    run = await exp.start_run()
    run.log("loss", 0.5, step=0)
    await run.flush()
    await run.get_metrics()
    consumers = (await conn.js.stream_info("LOGS")).state.consumer_count
    url = f"/api/w/{ws.name}/runs/{run.id}/live"
    async with browser_http.stream("GET", url, params={"logs": "true"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        first = await _read_events(lines, {"metrics", "run"})
        assert first["metrics"] == {"loss": [[0, first["metrics"]["loss"][0][1], 0.5]]}
        assert first["run"]["status"] == "Running"
        assert LIVE.streams >= 1
        assert (await conn.js.stream_info("LOGS")).state.consumer_count == consumers + 1
        run.log("loss", 0.25, step=1)
        run.log("loss", 0.125, step=2)
        await run.flush()
        more = await _read_events(lines, {"metrics"})
        points = more["metrics"]["loss"]
        assert [p[2] for p in points] == [0.25, 0.125]  # only the new points
        run.log("acc", 0.9, step=0)  # a metric the run had not logged when the page opened
        await run.flush()
        assert (await _read_events(lines, {"metrics"}))["metrics"] == {"acc": [[0, ANY_TIME, 0.9]]}
    await run.complete()

    async def released() -> bool:
        return LIVE.streams == 0 and not LIVE.feeds

    await _until(released, "the stream's feeds outlived its reader")

    async def removed() -> bool:  # the server removes the consumer INACTIVE_S after
        return (await conn.js.stream_info("LOGS")).state.consumer_count == consumers

    await _until(removed, "the stream's LOGS consumer outlived its reader")


async def test_a_history_read_in_pages_resumes_after_its_last_point(ws: AsyncWorkspace) -> None:
    """What the live stream sends after a wake-up: only points it has not sent, including a
    later batch's point at the last step it had."""
    exp = await ws.experiment("pages")
    run = await exp.start_run()
    for step in range(5):
        run.log("loss", float(step), step=step)
    await run.flush()
    points, cursor, seq, _ = await history_pages(
        ws.client, run.id, "loss", min_seq=ws.seen_metrics_seq, page_size=2
    )
    assert [p[2] for p in points] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert seq >= ws.seen_metrics_seq
    run.log("loss", 4.5, step=4)
    run.log("loss", 5.0, step=5)
    await run.flush()
    more, cursor, _, _ = await history_pages(
        ws.client, run.id, "loss", cursor, min_seq=ws.seen_metrics_seq, page_size=2
    )
    assert [(p[0], p[2]) for p in more] == [(4, 4.5), (5, 5.0)]
    none, _, _, _ = await history_pages(ws.client, run.id, "loss", cursor, page_size=2)
    assert none == []
    await run.complete()


async def test_the_run_page_links_its_children_and_the_models_registered_from_it(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    exp = await ws.experiment("family")
    parent = await exp.start_run(display_name="parent")
    child = await parent.child(display_name="the-child")
    await child.complete()
    (tmp_path / "model.bin").write_bytes(b"weights")
    await parent.upload_file("outputs/model.bin", tmp_path / "model.bin")
    await ws.models.register("churn-model", "outputs/model.bin", run_id=parent.id)
    await ws.models.register("team/churn", "outputs/model.bin", run_id=parent.id)
    await parent.complete()
    await parent.details()
    await ws.client.ask(ListModels(min_seq=ws.seen_seq))  # the registry has it too
    page = await browser_http.get(f"/w/{ws.name}/runs/{parent.id}")
    assert page.status_code == 200
    assert f'href="/w/{ws.name}/runs/{child.id}">the-child</a>' in page.text
    assert f'href="/w/{ws.name}/models/churn-model">churn-model:1</a>' in page.text
    # a name's "/" is escaped in its link, as the model pages encode and read it
    assert f'href="/w/{ws.name}/models/team%2Fchurn">team/churn:1</a>' in page.text
    model = await browser_http.get(f"/w/{ws.name}/models/team%2Fchurn")
    assert model.status_code == 200 and "<h1>team/churn</h1>" in model.text
    child_page = await browser_http.get(f"/w/{ws.name}/runs/{child.id}")
    assert f'href="/w/{ws.name}/runs/{parent.id}"' in child_page.text


async def test_a_history_answers_at_most_limit_points_and_a_cursor_for_the_rest(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    run = await (await ws.experiment("cursor")).start_run()
    for step in range(7):
        run.log("loss", float(step), step=step)
    await run.complete()
    # the gateway is another client: read the points back here first, so the read model
    # that answers both holds them (read-your-writes is per client)
    assert len((await run.get_metrics())["loss"]) == 7
    url = f"/api/w/{ws.name}/runs/{run.id}/history"
    steps: list[int] = []
    cursor, replies = "", 0
    while True:
        reply = await browser_http.get(url, params={"name": "loss", "limit": 3, "cursor": cursor})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert len(body["points"]) <= 3
        steps += [p[0] for p in body["points"]]
        replies += 1
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert steps == list(range(7)) and replies == 3
    for bad in ({"limit": 0}, {"limit": 1_000_001}, {"cursor": "x.y"}):
        refused = await browser_http.get(url, params={"name": "loss", **bad})
        assert refused.status_code == 400, (bad, refused.text)
