"""The spool is sent without hands, refusals are kept and reported, and NaN from the async
API follows the sync facade's policy point by point."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import connect
from cairn.errors import InvalidInput
from cairn.proto.commands import CompleteRun, CreateExperiment, ListExperiments
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, new_id
from cairn.settings import Settings
from cairn.spool import Refused, Spool
from tests.cluster.proxy import Proxy
from tests.conftest import LEAKS_SOCKETS, Agents
from tests.sdk.test_processes import Stack
from tests.sdk.test_sync_sdk import sdk_env

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


def point(value: Any, step: int = 0) -> MetricPoint:
    return MetricPoint("loss", "scalar", value, step, time.time())


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


async def test_an_agent_sends_the_spool_of_its_home_at_start(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """A script ended while the bus was away: its points and its completion wait in the spool
    until an agent on the machine starts; nobody runs ``cairn sync``."""
    run = await (await ws.experiment("spooled")).start_run()
    home = tmp_path / "home"
    spool = Spool(home / "spool")
    spool.append(ws.name, LogMetrics(command_id=new_id(), run_id=run.id, points=[point(0.5)]))
    spool.append(ws.name, CompleteRun(command_id=new_id(), run_id=run.id))
    spool.close()
    agents.settings = msgspec.structs.replace(agents.settings, home=str(home))
    await agents.start()

    async def completed() -> bool:
        return await run.get_status() == "Completed"

    await until(completed, 15, "the spooled completion arrived")
    assert await run.get_metrics() == {"loss": 0.5}
    assert not list((home / "spool").glob("*.jsonl"))


async def test_cairn_sync_reports_refused_commands_and_keeps_them(
    ws: AsyncWorkspace, client_settings: Settings, tmp_path: Path
) -> None:
    run = await (await ws.experiment("sync")).start_run()
    home = tmp_path / "home"
    spool = Spool(home / "spool")
    spool.append(ws.name, LogMetrics(command_id=new_id(), run_id=run.id, points=[point(0.5)]))
    lost = LogMetrics(command_id=new_id(), run_id="no-such-run", points=[point(1.0)])
    spool.append(ws.name, lost)
    spool.close()
    proc = await asyncio.create_subprocess_exec(
        *CAIRN,
        "sync",
        env=sdk_env(client_settings, ws.name, home),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1, (text, err.decode()[-3000:])
    assert "synced 1 spooled commands from 1 files" in text
    assert "refused 1 spooled commands for good" in text and "1 x [not_found]" in text
    assert not list((home / "spool").glob("*.jsonl"))
    kept = list((home / "spool" / "refused").glob("*.jsonl"))
    assert len(kept) == 1
    lines = kept[0].read_text().splitlines()
    assert len(lines) == 1
    refused = msgspec.json.decode(lines[0], type=Refused)
    assert refused.code == "not_found" and refused.command == lost
    assert await run.get_metrics() == {"loss": 0.5}


async def test_async_nan_and_infinity_follow_the_sync_policy_point_by_point(
    tmp_path: Path,
) -> None:
    """Under the default policy (keep them) a NaN logged through the async API is stored as
    the sync facade stores it, and the batch's good points with it."""
    stack = Stack(tmp_path / "stack", ["tracking", "ingester"])
    await stack.start()
    try:
        ws = AsyncWorkspace(stack.conn, "ws1", stack.client_settings)
        run = await (await ws.experiment("nan")).start_run()
        for step, value in enumerate([1.0, math.nan, 2.0, math.inf, -math.inf, 3]):
            run.log("x", value, step=step)
        run.log_list("l", [1.0, math.nan])
        run.log_row("r", a=math.inf, b=1)
        run.log_table("t", {"c": [-math.inf, 2.5]})
        assert await run.complete() is True
        assert [p[2] for p in await run.history("x")] == [
            1.0,
            "NaN",
            2.0,
            "Infinity",
            "-Infinity",
            3,
        ]
        got = await run.get_metrics()
        assert json.dumps({k: got[k] for k in "lrt"}) == json.dumps(
            {"l": [1.0, "NaN"], "r": {"a": ["Infinity"], "b": [1]}, "t": {"c": ["-Infinity", 2.5]}}
        )
        await ws.close()
    finally:
        await stack.close()


async def test_async_nan_under_a_strict_policy_is_refused_as_the_sync_facade_s(
    ws: AsyncWorkspace,
) -> None:
    """The session's ingester refuses non-finite values: the async API's NaN meets the same
    refusal as the sync facade's, not a decoding error."""
    run = await (await ws.experiment("strict-async")).start_run()
    run.log("x", math.nan)
    try:
        await run.flush()
    except InvalidInput as exc:
        assert "non-finite value 'NaN'" in exc.message
    else:
        raise AssertionError("a NaN was accepted under the strict policy")
    await run.complete()


@LEAKS_SOCKETS
async def test_closing_while_the_spool_drains_waits_for_it(
    client: Client, client_settings: Settings, tmp_path: Path, nats_py_leaks: None
) -> None:
    """A command spooled while the bus was away; the bus back, ``close`` waits for the spool's
    replay, which ends (and forgets itself) meanwhile: the close ends cleanly and the command
    got through."""
    host, port = client_settings.nats_url.removeprefix("nats://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    settings = msgspec.structs.replace(
        client_settings, nats_url=proxy.url, request_timeout=1.0, home=str(tmp_path / "home")
    )
    conn = await connect(settings)
    ws = AsyncWorkspace(conn, client.workspace, settings)
    name = f"spooled-{new_id()[:8]}"
    try:
        proxy.cut()
        reply = await ws.record(CreateExperiment(command_id=new_id(), name=name))
        assert reply is None  # spooled, and a replay started
        proxy.heal()
        async with asyncio.timeout(30):
            while not conn.nc.is_connected:
                await asyncio.sleep(0.05)
        await ws.close(timeout=30)
    finally:
        proxy.heal()
        await conn.close()
        await proxy.close()
    names = {e["name"] for e in (await client.ask(ListExperiments())).data}
    assert name in names
