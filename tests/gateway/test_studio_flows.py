"""The studio's pipeline and sweep pages over a real pipeline run and a real sweep, run by
in-process agents: the DAG with each step's status, reuse and run; the trials with their
parameters, state and primary metric; names users chose shown as text; the live stream; the
links from the run page and the jobs list. The browser test keeps a screenshot under its
tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from cairn.embedded._server import NatsServer
from cairn.sdk import (
    AsyncWorkspace,
    BanditPolicy,
    GridParameterSampling,
    HyperDriveConfig,
    choice,
)
from cairn.services.gateway import Gateway
from cairn.services.gateway._flows import dag_layout
from tests.conftest import Agents
from tests.gateway.browser import log_in, screenshot
from tests.gateway.conftest import login_password
from tests.pipelines.helpers import TWO_STEPS, submit, wait_pipeline, write_pipeline
from tests.sweeps.test_sweeps import run_sweep, script, wait_sweep

WAIT_MS = 60_000
MARKUP = "<i>pipe</i> & co"

#: prep, then train and check both reading prep's output
FORK = TWO_STEPS.replace("display_name: two steps", f'display_name: "{MARKUP}"') + (
    """\
  check:
    code: ./src
    command: python train.py --data ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
"""
)


def steps_of(html: str) -> dict[str, str]:
    """Step name -> status, as the DAG's boxes say."""
    return dict(
        re.findall(r'class="step status-\w+" data-step="([^"]+)" data-status="(\w+)"', html)
    )


def test_the_layout_puts_a_step_one_column_past_what_it_waits_for() -> None:
    steps = [
        {"step": "a", "upstream": []},
        {"step": "b", "upstream": ["a"]},
        {"step": "c", "upstream": ["a", "b"]},
        {"step": "d", "upstream": []},
    ]
    drawn = {n["step"]: (n["x"], n["y"]) for n in dag_layout(steps)["nodes"]}
    assert drawn["a"][0] == drawn["d"][0] < drawn["b"][0] < drawn["c"][0]
    assert drawn["a"][1] != drawn["d"][1]
    assert len(dag_layout(steps)["edges"]) == 3


async def test_a_pipeline_page_shows_its_steps_reuse_and_runs(
    ws: AsyncWorkspace, agents: Agents, browser_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await agents.start()
    path = write_pipeline(tmp_path, FORK)
    first = await wait_pipeline(ws, (await submit(ws, path)).run_id, timeout=120)
    assert first["status"] == "Completed", first
    again = await wait_pipeline(ws, (await submit(ws, path)).run_id, timeout=120)
    assert again["status"] == "Completed", again

    reply = await browser_http.get(f"/w/{ws.name}/pipelines/{first['run_id']}")
    assert reply.status_code == 200, reply.text
    assert steps_of(reply.text) == {"prep": "Completed", "train": "Completed", "check": "Completed"}
    for step in first["steps"]:
        assert f'href="/w/{ws.name}/runs/{step["run_id"]}"' in reply.text
    assert reply.text.count("marker-end=") == 2  # prep -> train, prep -> check
    assert "&lt;i&gt;pipe&lt;/i&gt; &amp; co" in reply.text and MARKUP not in reply.text

    reused = await browser_http.get(f"/w/{ws.name}/pipelines/{again['run_id']}")
    assert reused.status_code == 200
    earlier = {s["run_id"] for s in first["steps"]}  # train and check are the same job
    for step in again["steps"]:
        assert step["reused_run_id"] in earlier, again
        assert f'href="/w/{ws.name}/runs/{step["reused_run_id"]}"' in reused.text
    assert reused.text.count('class="reused"') == 3

    run_page = await browser_http.get(f"/w/{ws.name}/runs/{first['run_id']}")
    assert f'href="/w/{ws.name}/pipelines/{first["run_id"]}"' in run_page.text
    assert "/sweeps/" not in run_page.text
    jobs = await browser_http.get(f"/w/{ws.name}/jobs")
    assert f'href="/w/{ws.name}/pipelines/{first["run_id"]}"' in jobs.text

    # an ended pipeline's stream sends its view, then the end, and closes
    live = await browser_http.get(f"/api/w/{ws.name}/pipelines/{first['run_id']}/live")
    assert live.status_code == 200
    events = re.findall(r"event: (\w+)\r?\ndata: (.*)", live.text)
    assert [e for e, _ in events] == ["view", "end"], live.text
    assert json.loads(events[0][1])["status"] == "Completed"


async def test_a_sweep_page_shows_its_trials_and_marks_those_stopped_early(
    ws: AsyncWorkspace,
    agents: Agents,
    browser_http: httpx.AsyncClient,
    gateway: Gateway,
    nats_server: NatsServer,
    page: Any,
    tmp_path: Path,
) -> None:
    await agents.start(slots=2)
    config = HyperDriveConfig(
        run_config=script(tmp_path, "curve.py", "--reports", 8, "--pause", 0.4),
        hyperparameter_sampling=GridParameterSampling(
            {"decay": choice(0.0, 0.005, 0.02, 0.05)}, seed=3
        ),
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=4,
        max_concurrent_runs=1,
    )
    run_id, view = await run_sweep(ws, config)
    assert view["status"] == "Completed", view
    stopped = [t for t in view["trials"] if t["stopped"]]
    assert stopped, "the grid's order stops no trial: the test would prove nothing"

    reply = await browser_http.get(f"/w/{ws.name}/sweeps/{run_id}")
    assert reply.status_code == 200, reply.text
    assert len(re.findall(r"<tr data-trial=", reply.text)) == 4
    assert reply.text.count('class="stopped"') == len(stopped)
    for t in view["trials"]:
        assert f'href="/w/{ws.name}/runs/{t["run_id"]}"' in reply.text
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', reply.text)
    assert found, reply.text
    chart = json.loads(found.group(1))
    assert [a["label"] for a in chart["axes"]] == ["decay", "stopped early", "accuracy (best)"]
    assert sorted(chart["axes"][1]["values"]) == sorted(
        1 if t["stopped"] else 0 for t in view["trials"]
    )

    run_page = await browser_http.get(f"/w/{ws.name}/runs/{run_id}")
    assert f'href="/w/{ws.name}/sweeps/{run_id}"' in run_page.text
    jobs = await browser_http.get(f"/w/{ws.name}/jobs")
    assert f'href="/w/{ws.name}/sweeps/{run_id}"' in jobs.text

    # the chart: one line per trial that reported the metric, over the three axes
    await log_in(page, gateway.url, *login_password(nats_server), f"/w/{ws.name}/sweeps/{run_id}")
    await page.wait_for_selector("#pcoords .parcoords", timeout=WAIT_MS)
    drawn = await page.evaluate(
        "() => document.getElementById('pcoords').data[0].dimensions.map(d => d.values.length)"
    )
    assert drawn == [len(chart["trials"])] * 3
    await screenshot(page, tmp_path, "sweep")


async def test_a_sweep_page_shows_names_as_text(
    ws: AsyncWorkspace, agents: Agents, browser_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await agents.start()
    config = HyperDriveConfig(
        run_config=script(tmp_path, "curve.py", "--reports", 2, "--pause", 0),
        hyperparameter_sampling=GridParameterSampling({"decay": choice("<b>x</b>")}),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=1,
    )
    exp = await ws.experiment("<i>exp</i>")
    run = await exp.submit(config)
    view = await wait_sweep(ws, run.id)
    assert [t["parameters"] for t in view["trials"]] == [{"decay": "<b>x</b>"}], view
    reply = await browser_http.get(f"/w/{ws.name}/sweeps/{run.id}")
    assert reply.status_code == 200, reply.text
    assert "<i>exp</i>" not in reply.text and "&lt;i&gt;exp&lt;/i&gt;" in reply.text
    assert "<b>x</b>" not in reply.text and "&lt;b&gt;x&lt;/b&gt;" in reply.text


async def test_an_unknown_pipeline_or_sweep_is_not_found(
    ws: AsyncWorkspace, browser_http: httpx.AsyncClient
) -> None:
    for kind in ("pipelines", "sweeps"):
        page = await browser_http.get(f"/w/{ws.name}/{kind}/nosuchrun")
        assert page.status_code == 404, page.text
        live = await browser_http.get(f"/api/w/{ws.name}/{kind}/nosuchrun/live")
        assert live.status_code == 404, live.text
    run = await (await ws.experiment("plain")).start_run()
    await run.complete()
    plain = await browser_http.get(f"/w/{ws.name}/runs/{run.id}")
    assert "/pipelines/" not in plain.text and "/sweeps/" not in plain.text


async def test_the_pipeline_page_follows_its_steps_live(
    ws: AsyncWorkspace,
    agents: Agents,
    gateway: Gateway,
    nats_server: NatsServer,
    page: Any,
    tmp_path: Path,
) -> None:
    await agents.start()
    gate = tmp_path / "gate"  # prep waits for it: the page opens before any step has ended
    held = FORK.replace(
        "command: python prep.py",
        f"command: while [ ! -e {gate} ]; do sleep 0.1; done; python prep.py",
    )
    sent = await submit(ws, write_pipeline(tmp_path, held))
    await log_in(
        page, gateway.url, *login_password(nats_server), f"/w/{ws.name}/pipelines/{sent.run_id}"
    )
    first = await page.eval_on_selector_all(".dag .step", "els => els.map(e => e.dataset.status)")
    assert "Completed" not in first, first
    await screenshot(page, tmp_path, "pipeline-running")
    await page.evaluate("() => { window.sameDocument = true; }")
    gate.touch()
    await page.wait_for_function("() => window.Flows && Flows.ended", timeout=WAIT_MS)
    assert await page.evaluate("() => window.sameDocument === true && Flows.updates > 0")
    done = await wait_pipeline(ws, sent.run_id)
    assert done["status"] == "Completed", done
    statuses = await page.eval_on_selector_all(
        ".dag .step", "els => els.map(e => [e.dataset.step, e.dataset.status])"
    )
    assert dict(statuses) == {"prep": "Completed", "train": "Completed", "check": "Completed"}
    assert await page.text_content("#flow-status") == "Completed"
    assert await page.text_content("h1") == f"Pipeline {MARKUP}"
    await screenshot(page, tmp_path, "pipeline")
