"""Jobs benchmark: how close a Cairn job gets to just starting the process, side by side.

One run, on the embedded stack (``cairn up --local-slots 0`` in its own process, agents as
``cairn agent`` processes), the environment cached (the agent's interpreter):

1. Latency: ``submit`` -> the script's first output line seen by the submitter (through
   the LOGS stream), p50/p95 over ``--latency-jobs`` no-op jobs one at a time on one agent,
   beside the floor: spawning the same interpreter on the same script and reading its
   first line. Goal: p50 <= floor p50 + 50 ms.
2. Throughput: ``--jobs`` no-op jobs (submitted 16 at a time) over 4 agents (one slot each),
   jobs/s until the last one is Completed, beside the ceiling: the same number of bare
   spawns of the same script, 4 at a time. Goal: >= 50 % of the ceiling.

    .venv/bin/python bench/jobs.py [--latency-jobs 200] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cairn.sdk import AsyncWorkspace, ScriptRunConfig, connect
from cairn.sdk._jobs import follow, submit
from cairn.settings import load_settings
from tracking import EmbeddedStack

SCRIPT = "print('first line', flush=True)\n"
CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _processes(stack: EmbeddedStack, agents: list[subprocess.Popen[bytes]]) -> dict[str, list[int]]:
    nats = subprocess.run(["pgrep", "-P", str(stack.proc.pid), "nats-server"],
                          capture_output=True, text=True).stdout.split()  # fmt: skip
    return {"nats-server": [int(p) for p in nats], "services": [stack.proc.pid],
            "agents": [a.pid for a in agents], "submitter": [os.getpid()]}  # fmt: skip


def _cpu_by_part(procs: dict[str, list[int]]) -> dict[str, float]:
    out = {part: sum(_cpu_s(p)[0] for p in pids) for part, pids in procs.items()}
    out["job processes"] = sum(_cpu_s(p)[1] for p in procs["agents"])
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _spawn_first_line(script: Path) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, cwd=script.parent
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    took = time.perf_counter() - t0
    await proc.wait()
    return took


async def _spawn_all(script: Path, n: int, parallel: int) -> float:
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), stdout=asyncio.subprocess.DEVNULL,
                cwd=script.parent,
            )  # fmt: skip
            await proc.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


async def _job_first_line(ws: AsyncWorkspace, config: ScriptRunConfig) -> float:
    first = asyncio.Event()
    t0 = time.perf_counter()
    run_id = await submit(ws, "bench-jobs", config)
    waiter = asyncio.create_task(follow(ws, run_id, out=lambda _: first.set(), poll_s=0.05))
    await first.wait()
    took = time.perf_counter() - t0
    details = await waiter
    assert details["status"] == "Completed", details
    return took


def _agents(stack: EmbeddedStack, n: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "CAIRN_HOME": str(stack.home), "CAIRN_LOG_LEVEL": "warning",
           "CAIRN_LOG_FORMAT": "json"}  # fmt: skip
    return [subprocess.Popen([*CAIRN, "agent", "--compute", "local", "--slots", "1"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]  # fmt: skip


async def _wait_agents(ws: AsyncWorkspace, n: int) -> None:
    from cairn.services.agent import list_agents

    for _ in range(200):
        if len(await list_agents(ws.conn)) >= n:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{n} agents never registered")


async def measure(stack: EmbeddedStack, latency_jobs: int, jobs: int) -> dict[str, Any]:
    settings = load_settings(file=stack.home / "config.json")
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-job-"))
    script = folder / "noop.py"
    script.write_text(SCRIPT)
    config = ScriptRunConfig(source_directory=folder, script="noop.py")
    r: dict[str, Any] = {}
    agents = _agents(stack, 1)
    try:
        async with connect(settings) as ws:
            await _wait_agents(ws, 1)
            for _ in range(5):  # warm up: snapshot uploaded once, connections made
                await _job_first_line(ws, config)
            floor = [await _spawn_first_line(script) for _ in range(latency_jobs)]
            lat = [await _job_first_line(ws, config) for _ in range(latency_jobs)]
            r["floor_p50_ms"], r["floor_p95_ms"] = _pct(floor, 0.5) * 1e3, _pct(floor, 0.95) * 1e3
            r["job_p50_ms"], r["job_p95_ms"] = _pct(lat, 0.5) * 1e3, _pct(lat, 0.95) * 1e3
            r["p50_over_floor_ms"] = r["job_p50_ms"] - r["floor_p50_ms"]

            agents += _agents(stack, 3)
            await _wait_agents(ws, 4)
            r["ceiling_jobs_per_s"] = await _spawn_all(script, jobs, 4)
            ended: dict[str, str] = {}
            all_done = asyncio.Event()

            async def on_event(msg: Any) -> None:  # the log says when each run ends
                env = json.loads(msg.data)
                if env["type"] in ("RunCompleted", "RunFailed", "RunCanceled"):
                    ended[env["aggregate_id"]] = env["type"]
                    if len(ended) >= jobs:
                        all_done.set()

            sub = await ws.conn.nc.subscribe(f"cairn.ev.{ws.name}.run.>", cb=on_event)
            procs = _processes(stack, agents)
            cpu0 = _cpu_by_part(procs)
            t0 = time.perf_counter()
            gate = asyncio.Semaphore(16)  # a busy submitter, not a thundering herd

            async def submit_one() -> str:
                async with gate:
                    return await submit(ws, "bench-jobs", config)

            run_ids = await asyncio.gather(*(submit_one() for _ in range(jobs)))
            r["submit_per_s"] = jobs / (time.perf_counter() - t0)
            await asyncio.wait_for(all_done.wait(), 600)
            r["jobs_per_s"] = jobs / (time.perf_counter() - t0)
            cpu1 = _cpu_by_part(procs)
            for part in cpu1:  # where a job's CPU goes, in ms per job
                r[f"cpu_ms_per_job_{part}"] = (cpu1[part] - cpu0[part]) / jobs * 1e3
            await sub.unsubscribe()
            assert set(run_ids) == set(ended) and set(ended.values()) == {"RunCompleted"}
            r["throughput_vs_ceiling"] = r["jobs_per_s"] / r["ceiling_jobs_per_s"]
            r["median_job_run"] = statistics.median(lat)
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            proc.wait(30)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    stack = EmbeddedStack(extra=["--local-slots", "0"])
    try:
        r = asyncio.run(measure(stack, args.latency_jobs, args.jobs))
    finally:
        stack.stop()
    print(json.dumps({k: round(v, 3) for k, v in r.items()}, indent=2))
    print(
        f"latency: job p50 {r['job_p50_ms']:.1f} ms (p95 {r['job_p95_ms']:.1f}) vs spawn p50"
        f" {r['floor_p50_ms']:.1f} ms (p95 {r['floor_p95_ms']:.1f}): floor +"
        f" {r['p50_over_floor_ms']:.1f} ms (goal <= +50 ms)"
    )
    print(
        f"throughput: {r['jobs_per_s']:.1f} jobs/s over 4 agents vs {r['ceiling_jobs_per_s']:.1f}"
        f" bare spawns/s: {r['throughput_vs_ceiling']:.0%} (goal >= 50%)"
    )
    parts = [(k.removeprefix("cpu_ms_per_job_"), v) for k, v in r.items() if k.startswith("cpu_")]
    print("CPU per job: " + ", ".join(f"{part} {ms:.1f} ms" for part, ms in parts))


if __name__ == "__main__":
    main()
