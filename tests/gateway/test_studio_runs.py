"""The studio's experiment, run and compare pages in a real browser (chromium), over the
session's server, services and gateway; runs logged by the async SDK in this process; jobs
run by in-process agents. Each test keeps a screenshot under its tmp_path."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cairn.embedded._server import NatsServer
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._async import AsyncRun
from cairn.sdk._jobs import submit
from cairn.services.gateway import Gateway, _live
from cairn.services.gateway._live import LIVE
from cairn.services.gateway._runs import PAGE_SIZE
from tests.conftest import Agents
from tests.gateway.browser import log_in, screenshot
from tests.gateway.conftest import login_password

#: how long the page may take for what these tests wait for (generous: a loaded machine)
WAIT_MS = 15_000
#: points of the long series (more than one page of metrics.history)
LONG = 30_000


async def settled(run: AsyncRun) -> None:
    """What the run sent is in the read models (the browser's session did not send it)."""
    await run.flush()
    await run.details()
    await run.get_metrics()


async def open_page(page: Any, gateway: Gateway, nats_server: NatsServer, target: str) -> None:
    await log_in(page, gateway.url, *login_password(nats_server), target)


async def chart(page: Any, name: str) -> list[dict[str, Any]] | None:
    data: list[dict[str, Any]] | None = await page.evaluate("n => Studio.chartData(n)", name)
    return data


async def wait_points(page: Any, name: str, count: int, trace: int = 0) -> None:
    await page.wait_for_function(
        "([n, c, i]) => { const d = Studio.chartData(n); return d && d[i] && d[i].y.length >= c; }",
        arg=[name, count, trace],
        timeout=WAIT_MS,
    )


async def test_a_logged_run_shows_in_its_experiment_and_its_chart_follows_it_live(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    exp = await ws.experiment("train")
    run = await exp.start_run(display_name="baseline")
    await run.set_tags({"team": "vision"})
    await run.add_properties({"lr": "0.01"})
    first = [1.0 / (step + 1) for step in range(12)]
    for step, value in enumerate(first):
        run.log("loss", value, step=step)
    await settled(run)

    await open_page(page, gateway, nats_server, f"/w/{ws.name}/experiments/train")
    row = page.locator(f"tr[data-run='{run.id}']")
    assert await row.locator("a").first.inner_text() == "baseline"
    assert "Running" in await row.inner_text()
    assert "team=vision" in await row.inner_text()
    assert await row.locator("td.num").first.inner_text() == f"{first[-1]:.6g}"
    await screenshot(page, tmp_path, "experiment")

    await row.locator("a").first.click()
    await page.wait_for_url(f"**/w/{ws.name}/runs/{run.id}")
    await wait_points(page, "loss", len(first))
    shown = await chart(page, "loss")
    assert shown is not None and shown[0]["y"] == first and shown[0]["x"] == list(range(12))
    assert await page.locator("#params").inner_text() == "lr\n0.01"

    # the script keeps logging: the open page gets every new point, without a reload
    updates = await page.evaluate("Studio.updates")
    logged = list(first)
    latencies = []
    for step in range(12, 20):
        value = 0.05 + 1.0 / (step + 1)
        run.log("loss", value, step=step)
        logged.append(value)
        await run.flush()
        sent = time.monotonic()
        await wait_points(page, "loss", len(logged))
        latencies.append(time.monotonic() - sent)
    shown = await chart(page, "loss")
    assert shown is not None and shown[0]["y"] == logged
    assert await page.evaluate("Studio.updates") > updates
    print("new points shown after (s):", [round(x, 2) for x in latencies])
    await screenshot(page, tmp_path, "run-live")

    await run.complete()
    await page.wait_for_function(
        "() => document.getElementById('run-status').textContent === 'Completed'",
        timeout=WAIT_MS,
    )
    assert "Completed" in await page.locator("#timeline").inner_text()
    await screenshot(page, tmp_path, "run-completed")

    # the run has ended: the stream sends what is left and ends, and the page closes its
    # EventSource (it does not reconnect), leaving no stream nor feed on the gateway
    await page.wait_for_function(
        "() => Studio.ended && Studio.source.readyState === EventSource.CLOSED", timeout=WAIT_MS
    )
    assert await page.locator("#live-text").inner_text() == "ended"
    for _ in range(200):
        if LIVE.streams == 0 and not LIVE.feeds:
            break
        await asyncio.sleep(0.05)
    assert (LIVE.streams, LIVE.feeds) == (0, set())

    # the page of a run that has ended opens no live stream: it reads the series once
    await page.reload()
    await page.wait_for_function("() => Studio.ready", timeout=WAIT_MS)
    assert await page.evaluate("Studio.source") is None
    shown = await chart(page, "loss")
    assert shown is not None and shown[0]["y"] == logged
    assert LIVE.streams == 0
    await page.close()


async def test_the_output_of_a_running_job_shows_live(
    ws: AsyncWorkspace,
    agents: Agents,
    gateway: Gateway,
    nats_server: NatsServer,
    page: Any,
    tmp_path: Path,
) -> None:
    go_on = tmp_path / "go-on"
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(
        textwrap.dedent(
            f"""
            import os, time
            print("epoch 1 done", flush=True)
            while not os.path.exists({str(go_on)!r}):
                time.sleep(0.05)
            print("epoch 2 done", flush=True)
            """
        )
    )
    await agents.start()
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{run_id}")
    logs = page.locator("#logs")
    await page.wait_for_function(
        "() => document.getElementById('logs').textContent.includes('epoch 1 done')",
        timeout=WAIT_MS * 2,
    )
    assert "epoch 2" not in await logs.inner_text()
    await screenshot(page, tmp_path, "job-running")
    go_on.write_text("")
    await page.wait_for_function(
        "() => document.getElementById('logs').textContent.includes('epoch 2 done')",
        timeout=WAIT_MS,
    )
    await page.wait_for_function(
        "() => document.getElementById('run-status').textContent === 'Completed'",
        timeout=WAIT_MS * 2,
    )
    await page.wait_for_function("() => Studio.ended", timeout=WAIT_MS * 2)
    await screenshot(page, tmp_path, "job-done")
    # once ended, the page shows the output read once, with no stream
    await page.reload()
    await page.wait_for_function("() => Studio.ready", timeout=WAIT_MS)
    assert await page.evaluate("Studio.source") is None
    shown = await logs.inner_text()
    assert "epoch 1 done" in shown and "epoch 2 done" in shown


async def test_compare_overlays_two_runs_and_highlights_what_differs(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    exp = await ws.experiment("sweep")
    runs, series = [], []
    for lr, scale in (("0.1", 1.0), ("0.01", 0.5)):
        run = await exp.start_run(display_name=f"lr-{lr}")
        await run.add_properties({"lr": lr, "epochs": "5"})
        values = [scale / (step + 1) for step in range(6)]
        for step, value in enumerate(values):
            run.log("loss", value, step=step)
        await run.complete()
        await settled(run)
        runs.append(run)
        series.append(values)

    await open_page(page, gateway, nats_server, f"/w/{ws.name}/experiments/sweep")
    compare = page.locator("#compare")
    assert await compare.is_disabled()
    for run in runs:
        await page.locator(f"tr[data-run='{run.id}'] input[type=checkbox]").check()
    assert await compare.is_enabled()
    await compare.click()
    await page.wait_for_url("**/compare?**")
    await page.wait_for_function("() => Studio.ready", timeout=WAIT_MS)
    shown = await chart(page, "loss")
    assert shown is not None
    # one trace per run, in the table's order (newest first), each with all its points
    assert [t["name"] for t in shown] == ["lr-0.01", "lr-0.1"]
    assert [t["y"] for t in shown] == series[::-1]
    lr_cells = page.locator("tr[data-key='parameter:lr'] td")
    assert await lr_cells.all_inner_texts() == ["0.01", "0.1"]
    assert await lr_cells.first.get_attribute("class") == "differ"
    epochs = page.locator("tr[data-key='parameter:epochs'] td").first
    assert await epochs.get_attribute("class") == ""
    await screenshot(page, tmp_path, "compare")


async def test_a_file_name_with_markup_shows_as_text_and_downloads(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    name = "<img src=x onerror=alert(1)>.txt"
    local = tmp_path / "plain.txt"
    local.write_text("hello")
    exp = await ws.experiment("<b>bold</b> exp/2")
    run = await exp.start_run(display_name="<script>alert(2)</script>")
    await run.upload_file(name, local)
    await run.complete()
    await settled(run)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{run.id}")
    files = page.locator("#files")
    assert await files.locator("td").first.inner_text() == name
    assert await files.locator("img").count() == 0
    assert await page.locator("h1").inner_text() == "<script>alert(2)</script>"
    async with page.expect_download() as download:
        await files.locator("a", has_text="Download").click()
    saved = tmp_path / "saved.txt"
    await (await download.value).save_as(saved)
    assert saved.read_text() == "hello"
    await screenshot(page, tmp_path, "markup-run")
    await page.goto(f"{gateway.url}/w/{ws.name}/experiments")
    await page.locator("a", has_text="<b>bold</b> exp/2").click()
    await page.wait_for_url("**/experiments/%3Cb%3Ebold%3C/b%3E%20exp/2")
    assert await page.locator("h1").inner_text() == "<b>bold</b> exp/2"
    assert await page.locator(f"tr[data-run='{run.id}']").count() == 1
    await screenshot(page, tmp_path, "markup-experiment")
    assert dialogs == []


async def test_empty_states_say_what_fills_them(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    exp = await ws.experiment("quiet")
    run = await exp.start_run(display_name="nothing-yet")
    await settled(run)
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{run.id}")
    text = await page.locator("main").inner_text()
    for command in ('run.log("loss", 0.42)', "run.upload_file(", 'run.child_run("step-1")'):
        assert command in text
    await screenshot(page, tmp_path, "empty-run")
    await run.complete()


async def test_the_runs_table_pages_filters_and_sorts(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    exp = await ws.experiment("many")
    for i in range(PAGE_SIZE + 5):
        run = await exp.create_run(display_name=f"r{i:02d}")
    await run.details()
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/experiments/many")
    names = page.locator("table.runs tbody tr td:nth-child(2) a")
    first = await names.all_inner_texts()
    assert first == [f"r{i:02d}" for i in range(PAGE_SIZE + 4, 4, -1)]
    await page.click("text=next »")
    await page.wait_for_url("**cursor=**")
    assert await names.all_inner_texts() == [f"r{i:02d}" for i in range(4, -1, -1)]
    assert await page.locator("a[rel=next]").count() == 0
    await screenshot(page, tmp_path, "second-page")
    await page.fill("input[name=filter]", "name LIKE 'r0%'")
    await page.click("text=Apply")
    await page.wait_for_url("**filter=**")
    assert await names.all_inner_texts() == [f"r0{i}" for i in range(9, -1, -1)]
    await page.click("th >> text=Run")
    await page.wait_for_url("**order=name+ASC**")
    assert await names.all_inner_texts() == [f"r0{i}" for i in range(10)]
    await page.fill("input[name=filter]", "metrics.loss <")
    await page.click("text=Apply")
    await page.wait_for_url("**filter=metrics**")
    assert "filter:" in await page.locator("[role=alert]").inner_text()


async def test_a_long_series_is_charted_whole(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    exp = await ws.experiment("long")
    run = await exp.start_run(display_name="long")
    values = [((step * 7919) % 1000) / 1000 for step in range(LONG)]
    for step, value in enumerate(values):
        run.log("loss", value, step=step)
    await run.complete()
    await settled(run)
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{run.id}")
    await wait_points(page, "loss", LONG)
    shown = await chart(page, "loss")
    assert shown is not None and shown[0]["y"] == values
    await screenshot(page, tmp_path, "long")


async def test_names_in_charts_show_as_text_not_plotly_markup(
    ws: AsyncWorkspace, gateway: Gateway, nats_server: NatsServer, page: Any, tmp_path: Path
) -> None:
    """plotly.js reads <a href>, <b>... in titles and trace names: a metric or run named so
    shows its name, and the chart holds no link."""
    metric = '<a href="https://example.org/x">click</a> & <b>loss</b>'
    exp = await ws.experiment("markup")
    runs = []
    for n in range(2):
        run = await exp.start_run(display_name=f'<a href="https://example.org/{n}">run {n}</a>')
        for step in range(3):
            run.log(metric, float(step + n), step=step)
        await run.complete()
        await settled(run)
        runs.append(run)
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{runs[0].id}")
    await page.wait_for_function("() => Studio.ready", timeout=WAIT_MS)
    shown = await chart(page, metric)
    assert shown is not None and shown[0]["name"] == metric
    charts = page.locator("#charts")
    assert await charts.locator("a").count() == 0 and await charts.locator("b").count() == 0
    assert metric in await page.locator(".chart .gtitle").first.text_content()

    ids = ",".join(r.id for r in runs)
    await page.goto(f"{gateway.url}/w/{ws.name}/compare?runs={ids}")
    await page.wait_for_function("() => Studio.ready", timeout=WAIT_MS)
    traces = await chart(page, metric)
    assert traces is not None and {t["name"] for t in traces} == {
        f'<a href="https://example.org/{n}">run {n}</a>' for n in range(2)
    }
    assert await page.locator("#charts a").count() == 0
    legend = await page.locator("#charts .legendtext").all_text_contents()
    assert sorted(legend) == [f'<a href="https://example.org/{n}">run {n}</a>' for n in range(2)]
    await screenshot(page, tmp_path, "markup-names")


async def test_a_page_past_the_live_stream_cap_says_so(
    ws: AsyncWorkspace,
    gateway: Gateway,
    nats_server: NatsServer,
    page: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = await (await ws.experiment("capped")).start_run()
    await settled(run)
    monkeypatch.setattr(_live, "MOST_PER_PERSON", 0)  # this person may open none
    await open_page(page, gateway, nats_server, f"/w/{ws.name}/runs/{run.id}")
    await page.wait_for_function(
        "() => document.getElementById('live-text').textContent.includes('too many live pages')",
        timeout=WAIT_MS,
    )
    assert await page.evaluate("Studio.source.readyState") == 2  # closed: no reconnecting
    await screenshot(page, tmp_path, "live-capped")
    await run.complete()
