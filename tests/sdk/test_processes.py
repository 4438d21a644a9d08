"""Several processes, and the bus or the ingester going away under a logging script."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.bus import connect
from cairn.embedded import NatsServer
from cairn.embedded._up import all_services
from cairn.proto.commands import CreateWorkspace
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.settings import Settings
from tests.conftest import LEAKS_SOCKETS, settings_for
from tests.sdk.test_sync_sdk import sdk_env

SCRIPT = str(Path(__file__).with_name("log_points.py"))
CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


async def _spawn(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _line(proc: asyncio.subprocess.Process, wanted: str, timeout: float = 60) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        if not line:
            _, err = await proc.communicate()
            raise AssertionError(f"{wanted!r} never printed: {err.decode()[-3000:]}")
        if wanted in line:
            return line


async def _finish(proc: asyncio.subprocess.Process, timeout: float = 120) -> None:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-4000:]


async def _values(ws: AsyncWorkspace, run_id: str) -> list[list[Any]]:
    return await ws.run(run_id).history("value")


async def test_eight_processes_log_to_eight_runs(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    procs = [
        await _spawn(sys.executable, SCRIPT, "parallel", "4000", str(m), env=env, cwd=tmp_path)
        for m in range(1, 9)
    ]
    runs = [json.loads(await _line(p, "run_id"))["run_id"] for p in procs]
    await asyncio.gather(*(_finish(p) for p in procs))
    ws = AsyncWorkspace(client.conn, client.workspace)
    for marker, run_id in enumerate(runs, start=1):
        points = await asyncio.wait_for(_wait_count(ws, run_id, 4000), 30)
        assert [p[0] for p in points] == list(range(4000)), "lost or doubled points"
        assert {p[2] // 1_000_000 for p in points} == {marker}, "points of another run mixed in"
        assert await ws.run(run_id).get_status() == "Completed"


async def _wait_count(ws: AsyncWorkspace, run_id: str, n: int) -> list[list[Any]]:
    while len(points := await _values(ws, run_id)) < n:
        await asyncio.sleep(0.2)
    return points


class Stack:
    """A NATS server of the test's own with services in this process, so both can be
    stopped, killed and restarted."""

    def __init__(self, home: Path, services: list[str]) -> None:
        self.home = home
        self.server = NatsServer(home / "server", port=0)
        self.names = services
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self.settings = settings_for(
            self.server,
            service=True,
            state_dir=str(self.home / "state"),
            artifacts_dir=str(self.home / "artifacts"),
            request_timeout=2.0,
        )
        self.client_settings = settings_for(self.server, service=False, request_timeout=2.0)
        ready = asyncio.Event()
        factories = [all_services()[n] for n in self.names]
        self.task = asyncio.create_task(
            run_services(self.settings, factories, stop=self.stop, ready=ready)
        )
        await asyncio.wait_for(ready.wait(), 15)
        self.conn = await connect(self.client_settings)
        self.client = Client(self.conn, "ws1")
        await self.client.send(CreateWorkspace(command_id="create-ws1", name="ws1"))

    def env(self, cwd_home: Path) -> dict[str, str]:
        env = sdk_env(self.client_settings, "ws1", cwd_home)
        env["CAIRN_REQUEST_TIMEOUT"] = "2"
        return env

    def service_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CAIRN_HOME": str(self.home / "served"),
            "CAIRN_NATS_URL": self.settings.nats_url,
            "CAIRN_NATS_USER": self.settings.nats_user or "",
            "CAIRN_NATS_PASSWORD": self.settings.nats_password or "",
            "CAIRN_LOG_FORMAT": "json",
        }

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        await self.conn.close()
        self.server.stop()


@pytest.fixture
async def stack_factory(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Stack] = []

    async def make(services: list[str]) -> Stack:
        stack = Stack(tmp_path / f"stack{len(made)}", services)
        made.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in made:
        await stack.close()


@LEAKS_SOCKETS
async def test_bus_outage_mid_run_then_cairn_sync(
    stack_factory: Any, tmp_path: Path, nats_py_leaks: None
) -> None:
    stack: Stack = await stack_factory(["tracking", "ingester", "artifacts"])
    home = tmp_path / "script-home"
    env = stack.env(home)
    go = tmp_path / "go"
    proc = await _spawn(
        sys.executable, SCRIPT, "outage", "20000", "7", str(go), env=env, cwd=tmp_path
    )
    run_id = json.loads(await _line(proc, "run_id"))["run_id"]
    await _line(proc, "half")
    stack.server.stop()  # the embedded NATS goes away mid-run
    go.touch()
    await _finish(proc)  # the script finishes anyway
    spooled = list((home / "spool").glob("*.jsonl"))
    assert spooled, "the second half should have been spooled"

    restarted = NatsServer(stack.server.home, port=stack.server.port)
    await restarted.start()
    stack.server = restarted
    sync = await _spawn(*CAIRN, "sync", env=env, cwd=tmp_path)
    out, err = await asyncio.wait_for(sync.communicate(), 60)
    assert sync.returncode == 0, err.decode()[-3000:]
    assert "synced" in out.decode()
    assert not list((home / "spool").glob("*.jsonl"))

    ws = AsyncWorkspace(stack.conn, "ws1")
    points = await asyncio.wait_for(_wait_count(ws, run_id, 20000), 60)
    assert [p[0] for p in points] == list(range(20000)), "every point exactly once"
    for _ in range(100):
        if await ws.run(run_id).get_status() == "Completed":
            break
        await asyncio.sleep(0.2)
    assert await ws.run(run_id).get_status() == "Completed"


async def test_ingester_killed_mid_run_loses_and_doubles_nothing(
    stack_factory: Any, tmp_path: Path
) -> None:
    stack: Stack = await stack_factory(["tracking", "artifacts"])
    ingester = await _spawn(*CAIRN, "serve", "ingester", env=stack.service_env(), cwd=tmp_path)
    env = {**stack.env(tmp_path / "script-home"), "LOG_PACE_S": "0.05"}
    proc = await _spawn(sys.executable, SCRIPT, "kill", "100000", "3", env=env, cwd=tmp_path)
    run_id = json.loads(await _line(proc, "run_id", timeout=30))["run_id"]
    while (await stack.conn.js.stream_info("METRICS")).state.messages < 3:
        await asyncio.sleep(0.05)
    ingester.send_signal(signal.SIGKILL)
    await ingester.wait()
    await asyncio.sleep(1.0)
    ingester = await _spawn(*CAIRN, "serve", "ingester", env=stack.service_env(), cwd=tmp_path)
    try:
        await _finish(proc, timeout=180)
        ws = AsyncWorkspace(stack.conn, "ws1")
        points = await asyncio.wait_for(_wait_count(ws, run_id, 100_000), 60)
        assert len(points) == 100_000
        assert [p[0] for p in points] == list(range(100_000))
    finally:
        ingester.send_signal(signal.SIGTERM)
        await ingester.communicate()
