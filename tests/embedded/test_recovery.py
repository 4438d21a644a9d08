"""``cairn up`` recovers without hands: after its own kill -9, and when its nats-server dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cairn.embedded import NatsServer
from cairn.rpc import ping_all
from cairn.sdk import connect
from cairn.settings import load_settings
from tests.embedded.test_up import Up

SERVICES = {
    "artifacts",
    "audit",
    "ingester",
    "pipelines",
    "registry",
    "scheduler",
    "sweeps",
    "tracking",
}


def alive(pid: int) -> bool:
    """Running (a zombie whose parent has not reaped it yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def server_pid(home: Path) -> int:
    """The pid in the server's pid file (0 while a starting server has not written it)."""
    try:
        return int((home / "nats" / "nats.pid").read_text())
    except (OSError, ValueError):
        return 0


async def a_completed_run(home: Path) -> str:
    settings = load_settings(env={"CAIRN_HOME": str(home)})
    async with connect(settings) as ws:
        for _ in range(100):  # the services reconnect to a restarted server on their own
            try:
                answered = {s["service"] for s in await ping_all(ws.conn, wait_s=0.3)}
            except json.JSONDecodeError:  # "no responders" (empty): none is back yet
                answered = set()
            if SERVICES <= answered:
                break
            await asyncio.sleep(0.1)
        run = await (await ws.experiment("recovery")).start_run()
        run.log("x", 1.0, step=0)
        await run.complete()
        assert await run.get_status() == "Completed"  # (reads wait for what this session wrote)
        assert await run.get_metrics() == {"x": 1.0}
        return run.id


async def status_and_metrics(home: Path, run_id: str) -> tuple[str, dict[str, object]]:
    settings = load_settings(env={"CAIRN_HOME": str(home)})
    async with connect(settings) as ws:
        run = ws.run(run_id)
        return await run.get_status(), await run.get_metrics()


def test_kill_9_of_up_then_up_again_starts_cleanly_with_the_data(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    first = Up(home, port, "--local-slots", "0")
    ups.append(first.proc)
    first.wait_for("cairn is up", timeout=15)
    run_id = asyncio.run(a_completed_run(home))
    left = server_pid(home)
    first.proc.kill()
    first.proc.communicate(timeout=10)
    assert alive(left), "the server outlives its killed owner (what the next start must handle)"

    again = Up(home, port, "--local-slots", "0")
    ups.append(again.proc)
    again.wait_for("cairn is up", timeout=20)
    assert not alive(left), "the server left behind was stopped"
    assert server_pid(home) != left
    assert asyncio.run(status_and_metrics(home, run_id)) == ("Completed", {"x": 1.0})
    assert again.interrupt() == 0


def test_a_nats_server_killed_under_up_is_restarted_and_clients_work_again(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port, "--local-slots", "0")
    ups.append(up.proc)
    up.wait_for("press Ctrl-C", timeout=15)
    killed = server_pid(home)
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid = server_pid(home)
        if pid not in (0, killed) and alive(pid):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no new nats-server within 15 s")
    assert up.proc.poll() is None
    asyncio.run(a_completed_run(home))
    assert up.interrupt() == 0


def test_up_gives_up_in_one_line_when_its_server_cannot_come_back(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port, "--local-slots", "0", "--server-restarts", "1")
    ups.append(up.proc)
    up.wait_for("press Ctrl-C", timeout=15)
    killed = server_pid(home)
    with socket.socket() as squatter:  # the port is taken the moment the server is gone
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(killed, signal.SIGKILL)
        while True:  # the restart comes 0.5 s after the death at the earliest
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.005)
        squatter.listen()
        _, err = up.proc.communicate(timeout=30)
    assert up.proc.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("error [")]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith("error [unavailable]: nats-server on ")
    assert "1 restarts did not keep it up" in errors[0]


async def test_a_pid_file_naming_another_process_never_gets_it_signalled(
    tmp_path: Path,
) -> None:
    """The pid in the file was given to another process, or is another home's nats-server:
    the server starts and neither is touched."""
    stranger = await asyncio.create_subprocess_exec("sleep", "300")
    neighbour = NatsServer(tmp_path / "b", port=0)
    await neighbour.start()
    try:
        assert neighbour.proc is not None
        for pid in (stranger.pid, neighbour.proc.pid):
            server = NatsServer(tmp_path / "a", port=0)
            server.pid_file.write_text(f"{pid}\n")
            await server.start()
            try:
                assert server.proc is not None and server.proc.poll() is None
            finally:
                server.stop()
            assert stranger.returncode is None and alive(stranger.pid)
            assert neighbour.proc.poll() is None
    finally:
        stranger.kill()
        await stranger.wait()
        neighbour.stop()


SPOOLING_SCRIPT = """
import json, os, sys, time
from cairn.sdk import Experiment, Workspace

run = Experiment(Workspace.from_config(), "offline").start_logging()
for step in range(100):
    run.log("loss", 1.0 / (step + 1), step=step)
run.flush()
print(json.dumps({"run_id": run.id}), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
for step in range(100, 200):
    run.log("loss", 1.0 / (step + 1), step=step)
print(json.dumps({"stored": run.complete()}), flush=True)
"""


def test_complete_says_it_only_spooled_and_the_next_up_sends_the_spool(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    home, port = up_home
    first = Up(home, port, "--local-slots", "0")
    ups.append(first.proc)
    first.wait_for("cairn is up", timeout=15)
    go = tmp_path / "go"
    env = {**os.environ, "CAIRN_HOME": str(home), "CAIRN_LOG_FORMAT": "json"}
    script = subprocess.Popen(
        [sys.executable, "-c", SPOOLING_SCRIPT, str(go)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.stdout is not None
        line = ""
        while not line.startswith('{"run_id"'):  # (log lines may come first)
            line = script.stdout.readline()
            assert line, "the script ended before it logged"
        run_id = json.loads(line)["run_id"]
        assert first.interrupt() == 0  # the stack goes away under the script
        go.touch()
        out, err = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
    assert script.returncode == 0, err[-3000:]
    results = [json.loads(line) for line in out.splitlines() if line.startswith('{"stored"')]
    assert results == [{"stored": False}], out
    said = [line for line in (out + err).splitlines() if "run_spooled" in line]
    assert len(said) == 1 and run_id in said[0], out + err
    assert list((home / "spool").glob("*.jsonl"))

    again = Up(home, port, "--local-slots", "0")
    ups.append(again.proc)
    again.wait_for("cairn is up", timeout=15)

    async def arrived() -> tuple[str, int]:
        settings = load_settings(env={"CAIRN_HOME": str(home)})
        async with connect(settings) as ws:
            for _ in range(200):  # sent at start, by cairn up itself
                status = await ws.run(run_id).get_status()
                points = await ws.run(run_id).history("loss")
                if status == "Completed" and len(points) == 200:
                    break
                await asyncio.sleep(0.1)
            return status, len(points)

    assert asyncio.run(arrived()) == ("Completed", 200)
    assert not list((home / "spool").glob("*.jsonl"))
    assert again.interrupt() == 0
