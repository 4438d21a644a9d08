"""Agents register their capacity (GPUs through nvidia-smi) and heartbeat into cairn_agents."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cairn.bus import Connection
from cairn.rpc import Client
from cairn.services.agent import AgentService, detect_gpus, list_agents
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import sdk_env

if TYPE_CHECKING:
    from tests.conftest import Agents

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]

# what `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`
# prints on a two-GPU machine, plus a line it never prints, to show it is skipped
FAKE_SMI = """#!/bin/sh
echo "0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA H100 80GB HBM3, 81559"
echo "1, GPU-66666666-7777-8888-9999-000000000000, NVIDIA H100 80GB HBM3, 81559"
echo "garbage"
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(FAKE_SMI)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    return tool


def test_gpus_come_from_nvidia_smi(fake_nvidia_smi: Path) -> None:
    gpus = detect_gpus()
    assert [(g.index, g.name, g.memory_mib) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 81559),
        (1, "NVIDIA H100 80GB HBM3", 81559),
    ]


def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


async def test_agent_heartbeats_and_leaves(
    conn: Connection, service_settings: Settings, fake_nvidia_smi: Path
) -> None:
    stop = asyncio.Event()
    agent = AgentService(conn, service_settings, compute="gpu-pool", slots=2, labels=["a100"])
    agent.interval_s = 0.2
    await agent.start()
    task = asyncio.create_task(agent.run(stop))
    try:
        first = {a.agent_id: a for a in await list_agents(conn)}[agent.agent_id]
        assert (first.compute, first.slots, first.free_slots) == ("gpu-pool", 2, 2)
        assert first.labels == ["a100", "gpu"] and len(first.gpus) == 2 and first.cpus >= 1
        await asyncio.sleep(0.5)
        later = {a.agent_id: a for a in await list_agents(conn)}[agent.agent_id]
        assert later.heartbeat_at > first.heartbeat_at
    finally:
        stop.set()
        await task
    assert agent.agent_id not in {a.agent_id for a in await list_agents(conn)}


async def test_cairn_agent_runs_lists_and_stops(
    client_settings: Settings, service_settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path),
        "CAIRN_NATS_URL": service_settings.nats_url,
        "CAIRN_NATS_USER": service_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": service_settings.nats_password or "",
        "CAIRN_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        *CAIRN,
        "agent",
        "--compute",
        "cpu-pool",
        "--slots",
        "3",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    listing_env = sdk_env(client_settings, "default", tmp_path / "client")
    try:
        mine: list[dict[str, object]] = []
        for _ in range(100):
            lister = await asyncio.create_subprocess_exec(
                *CAIRN,
                "agent",
                "list",
                "--json",
                env=listing_env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, _ = await lister.communicate()
            mine = [a for a in json.loads(out) if a["compute"] == "cpu-pool"]
            if mine:
                break
            await asyncio.sleep(0.1)
        assert mine and mine[0]["slots"] == 3 and mine[0]["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_gpu_jobs_get_the_devices_they_were_given(
    fake_nvidia_smi: Path,
    client: Client,
    agents: Agents,
    tmp_path: Path,
    client_settings: Settings,
) -> None:
    """Two GPUs on the agent: a job asking for one sees exactly one in CUDA_VISIBLE_DEVICES,
    a job asking for three fails with the reason."""
    from cairn.bus import connect
    from cairn.sdk import AsyncWorkspace, ScriptRunConfig
    from cairn.sdk._jobs import follow, submit

    await agents.start(slots=2)
    conn = await connect(client_settings)
    ws = AsyncWorkspace(conn, client.workspace, client_settings)
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "job.py").write_text(
            "import os; print('devices', os.environ['CUDA_VISIBLE_DEVICES'])\n"
        )
        one = ScriptRunConfig(source_directory=src, script="job.py", gpus=1)
        printed: list[str] = []
        details = await follow(ws, await submit(ws, "gpu", one), out=printed.append, timeout=60)
        assert details["status"] == "Completed" and "devices 0\n" in "".join(printed)
        three = ScriptRunConfig(source_directory=src, script="job.py", gpus=3)
        details = await follow(ws, await submit(ws, "gpu", three), timeout=60)
        assert details["status"] == "Failed" and "needs 3 GPUs" in details["error"]
    finally:
        await ws.close()
        await conn.close()


GPU_JOB = """\
import os

import torch

from cairn.sdk import Run

run = Run.get_context()
torch.manual_seed(0)
a = torch.randn(4096, 4096, device="cuda")
on_gpu = (a @ a.T).trace().item()
on_cpu = (a.cpu() @ a.cpu().T).trace().item()
run.log("relative_error", abs(on_gpu - on_cpu) / on_cpu)
print("visible", os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count())
print("device", torch.cuda.get_device_name(0))
"""


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi: no NVIDIA GPU here")
async def test_a_real_gpu_is_advertised_and_runs_a_job(
    conn: Connection,
    client: Client,
    agents: Agents,
    tmp_path: Path,
    client_settings: Settings,
) -> None:
    """On a machine with an NVIDIA GPU: the agent advertises what nvidia-smi reports, and a job
    asking for one GPU computes on it with PyTorch, logging through its run."""
    pytest.importorskip("torch", reason="PyTorch is not installed: the GPU job needs it")
    from cairn.bus import connect
    from cairn.sdk import AsyncWorkspace, ScriptRunConfig
    from cairn.sdk._jobs import follow, submit

    found = detect_gpus()
    assert found, "nvidia-smi is present but reported no GPU"
    await agents.start(slots=1)
    mine = [a for a in await list_agents(conn) if a.pid == os.getpid()]
    assert len(mine) == 1 and mine[0].gpus == found and "gpu" in mine[0].labels
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(GPU_JOB)
    client_conn = await connect(client_settings)
    ws = AsyncWorkspace(client_conn, client.workspace, client_settings)
    try:
        config = ScriptRunConfig(source_directory=src, script="job.py", gpus=1)
        printed: list[str] = []
        run_id = await submit(ws, "gpu", config)
        details = await follow(ws, run_id, out=printed.append, timeout=300)
        output = "".join(printed)
        assert details["status"] == "Completed", output[-3000:]
        assert f"visible {found[0].index} 1\n" in output
        assert f"device {found[0].name}\n" in output
        metrics = await ws.run(run_id).get_metrics()
        assert metrics["relative_error"] < 1e-3
    finally:
        await ws.close()
        await client_conn.close()
