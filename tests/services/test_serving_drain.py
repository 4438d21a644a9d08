"""A replica's agent end to end (a real scheduler, agent, replica and gateway): a run() past
its time fails itself alone (the agent drains the requests beside it before it stops the
replica), and the agent's own 429s carry ``Cairn-Unrun: 1`` on the wire."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
from nats.errors import TimeoutError as NatsTimeout

from cairn.proto import subjects
from cairn.sdk import AsyncWorkspace
from cairn.services.agent._serving import STATUS_HEADER, TIMEOUT_HEADER, UNRUN_HEADER
from cairn.services.gateway import Gateway
from tests.conftest import Agents
from tests.services.test_serving import _deploy, _post, _register, _source, scoring  # noqa: F401

#: ``mark``: a file made once run() began; ``wait``: a file run() waits for (both in the
#: replica's own folder, its working directory: the one it may write); ``sleep``
WAITS = """
import json
import os
import time


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("mark"):
        open(data["mark"], "w").close()
    if data.get("wait"):
        while not os.path.exists(data["wait"]):
            time.sleep(0.01)
    if data.get("sleep"):
        time.sleep(data["sleep"])
    return {"pid": os.getpid(), "cwd": os.getcwd(), "name": NAME}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _exists(path: Path) -> bool:
    return path.exists()


async def _until(path: Path) -> None:
    async with asyncio.timeout(60):
        while not _exists(path):
            await asyncio.sleep(0.02)


async def test_the_agent_drains_the_requests_beside_a_run_past_its_time(
    scoring: tuple[Gateway, AsyncWorkspace],  # noqa: F811
    agents: Agents,
    tmp_path: Path,
) -> None:
    """Two workers: one run() overruns (504) while the other is still answering a request.
    The replica is not killed at once: the request beside it is answered 200 by the same
    process, and only then is the replica stopped and replaced."""
    _, ws = scoring
    await _register(ws, tmp_path)
    await agents.start()
    keys = await ws.endpoints.create("ep")
    source = _source(tmp_path / "src", "blue", WAITS)
    row = await _deploy(
        ws, source, "blue", request_timeout_s=8.0, max_concurrent_requests=2, max_queue_wait_s=1.0
    )
    assert row["status"] == "Succeeded"
    url, key = ws.endpoints.scoring_uri("ep"), keys["primary"]
    async with httpx.AsyncClient() as http:
        first = (await _post(http, url, {}, key)).json()
        pid, marks = first["pid"], Path(first["cwd"])
        over = asyncio.create_task(_post(http, url, {"sleep": 60, "mark": "o"}, key))
        await _until(marks / "o")
        # half the time limit later: the overrun comes while this one runs, its own limit
        # long after the overrun
        await asyncio.sleep(4.0)
        beside = {"wait": "go", "mark": "b"}
        held = asyncio.create_task(_post(http, url, beside, key))
        await _until(marks / "b")
        overran = await asyncio.wait_for(over, 60)
        assert overran.status_code == 504 and "longer than 8 s" in overran.json()["error"]
        assert not held.done()
        assert _alive(pid), "the replica was stopped before the request beside it ended"
        (marks / "go").write_text("")
        answered = await asyncio.wait_for(held, 60)
        assert answered.status_code == 200 and answered.json()["pid"] == pid
        for _ in range(120):  # then it is stopped, and a new attempt takes over
            reply = await _post(http, url, {}, key)
            if reply.status_code == 200 and reply.json()["pid"] != pid:
                break
            await asyncio.sleep(0.5)
        assert reply.status_code == 200 and reply.json()["pid"] != pid
        assert not _alive(pid)


async def test_the_agents_own_429_is_marked_unrun_on_the_wire(
    scoring: tuple[Gateway, AsyncWorkspace],  # noqa: F811
    agents: Agents,
    tmp_path: Path,
) -> None:
    """One worker, running a request, and one more waiting for it: a request beyond them is
    refused by the agent before run() (429), and its answer carries ``Cairn-Unrun: 1``,
    which is what lets the gateway ask another replica."""
    gw, ws = scoring
    await _register(ws, tmp_path)
    await agents.start()
    keys = await ws.endpoints.create("ep")
    source = _source(tmp_path / "src", "blue", WAITS)
    row = await _deploy(
        ws, source, "blue", request_timeout_s=60.0, max_concurrent_requests=1, max_queue_wait_s=60
    )
    assert row["status"] == "Succeeded"
    url, key = ws.endpoints.scoring_uri("ep"), keys["primary"]
    body = {"wait": "go"}
    conn = await gw.app.state.scorer.connection()  # the gateway's scoring user, its inbox
    subject = subjects.serve(ws.name, "ep", "blue")
    async with httpx.AsyncClient() as http:
        marks = Path((await _post(http, url, {}, key)).json()["cwd"])
        running = asyncio.create_task(_post(http, url, {**body, "mark": "r"}, key))
        await _until(marks / "r")
        # one more, to wait for the worker; and others, each giving up after a second, until
        # one of them is refused (whichever holds the place of the one waiting, the other is)
        waiting = asyncio.create_task(
            conn.nc.request(subject, json.dumps(body).encode(), timeout=60)
        )
        refused = None
        for _ in range(30):
            if waiting.done():
                refused = waiting.result()
                break
            try:
                refused = await conn.nc.request(
                    subject,
                    json.dumps({"n": 1}).encode(),
                    timeout=5,
                    headers={TIMEOUT_HEADER: "1000"},
                )
                break
            except NatsTimeout:  # it held the place itself
                continue
        assert refused is not None, "no request was refused"
        headers = refused.headers or {}
        assert headers.get(STATUS_HEADER) == "429" and "busy" in refused.data.decode()
        assert headers.get(UNRUN_HEADER) == "1"
        (marks / "go").write_text("")
        assert (await asyncio.wait_for(running, 60)).status_code == 200
        answered = await asyncio.wait_for(waiting, 60)
        assert (answered.headers or {}).get(STATUS_HEADER) in ("200", "429")
