"""Jobs benchmark: how close a Cairn job gets to just starting the process, side by side.

One run, on the embedded stack (``cairn up --local-slots 0`` in its own process, agents as
``cairn agent`` processes), the environment cached (the agent's interpreter):

1. Latency: ``submit`` -> the script's first output line seen by the submitter (through
   the LOGS stream), p50/p95 over ``--latency-jobs`` no-op jobs one at a time on one agent,
   beside the floor: spawning the same interpreter on the same script and reading its
   first line. Goal: p50 <= floor p50 + 50 ms.
2. Throughput: ``--jobs`` no-op jobs (submitted 16 at a time) over 4 agents (one slot each),
   jobs/s until the last one is Completed, beside the ceiling: the same number of bare
   spawns of the same script, 4 at a time. Goal: >= 50 % of the ceiling. Run twice: with
   warm starts (the agents' default: each job forked from a zygote) and with every job's
   interpreter started cold (``CAIRN_JOB_WARM_START=0``).
3. Logging from a job: a script logs and flushes ``--points`` metric points, inside a job
   (through its agent's socket) and as a plain process on the same machine (straight to
   NATS as the local person), points/s side by side.

    .venv/bin/python bench/jobs.py [--latency-jobs 200] [--jobs 1000] [--points 20000]
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
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).parent))

from cairn.bus import Connection
from cairn.bus import connect as connect_bus
from cairn.embedded._auth import SERVICE_USER, Credentials
from cairn.sdk import AsyncWorkspace, ScriptRunConfig, connect
from cairn.sdk._jobs import follow, submit
from cairn.settings import load_settings
from tracking import EmbeddedStack

SCRIPT = "print('first line', flush=True)\n"
#: points logged and flushed from inside a job (through its agent) or from a plain process
LOGGING = """
import os, sys, time
from cairn.sdk import Experiment, Run, Workspace
n = int(sys.argv[1])
inside = bool(os.environ.get("CAIRN_RUN_ID"))
if inside:
    run = Run.get_context()
else:
    run = Experiment(Workspace.from_config(), "bench-jobs").start_logging()
t0 = time.perf_counter()
for i in range(n):
    run.log("loss", 1.0 / (i + 1), step=i)
run.flush()
print(f"LOGGED {n / (time.perf_counter() - t0):.1f}", flush=True)
if not inside:
    run.complete()
"""
CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _children(pid: int, name: str | None = None) -> list[int]:
    pattern = [name] if name else []
    found = subprocess.run(["pgrep", "-P", str(pid), *pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


class Stack(Protocol):
    """What the jobs benchmark needs of a stack: ``EmbeddedStack`` (``cairn up``), or the
    single node and the cluster of ``bench/cluster.py``."""

    @property
    def home(self) -> Path: ...

    @property
    def services_pid(self) -> int: ...

    def server_pids(self) -> list[int]: ...


def _processes(stack: Stack, agents: list[subprocess.Popen[bytes]]) -> dict[str, list[int]]:
    return {
        "nats-server": stack.server_pids(),
        "services": [stack.services_pid],
        "agents": [a.pid for a in agents],
        "submitter": [os.getpid()],
        "zygotes": [z for a in agents for z in _children(a.pid)],
    }


def _cpu_by_part(procs: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds per part and process. A job's process is reaped by its agent (cold start)
    or by the agent's zygote (warm start): "job processes" is what both reaped, plus the
    zygotes themselves."""
    out = {part: {p: _cpu_s(p)[0] for p in pids} for part, pids in procs.items()}
    out["job processes"] = {p: _cpu_s(p)[1] for p in procs["agents"]}
    out["job processes"].update({p: sum(_cpu_s(p)) for p in out.pop("zygotes")})
    return out


def _spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """Seconds per part between two samples (a process first seen in ``after`` from zero)."""
    return {
        part: sum(t - before.get(part, {}).get(p, 0.0) for p, t in pids.items())
        for part, pids in after.items()
    }


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
                sys.executable,
                str(script),
                stdout=asyncio.subprocess.DEVNULL,
                cwd=script.parent,
            )
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


def _agents(stack: Stack, n: int, warm: bool = True) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CAIRN_HOME": str(stack.home),
        "CAIRN_LOG_LEVEL": "warning",
        "CAIRN_LOG_FORMAT": "json",
        "CAIRN_JOB_WARM_START": "1" if warm else "0",
    }
    return [
        subprocess.Popen(
            [*CAIRN, "agent", "--compute", "local", "--slots", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


async def _wait_agents(ws: AsyncWorkspace, n: int, only: list[int] | None = None) -> None:
    from cairn.services.agent import list_agents

    for _ in range(200):
        found = await list_agents(ws.conn)
        if len(found) >= n and (only is None or len(found) == n):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{n} agents never registered")


async def _throughput(
    ws: AsyncWorkspace,
    observer: Connection,
    stack: Stack,
    agents: list[subprocess.Popen[bytes]],
    config: ScriptRunConfig,
    jobs: int,
    key: str,
) -> dict[str, float]:
    """``jobs`` no-op jobs over the running agents: jobs/s, and CPU per job by part.
    ``observer`` (a service connection: people may not read the log) sees the runs end."""
    r: dict[str, float] = {}
    ended: dict[str, str] = {}
    all_done = asyncio.Event()
    target = [jobs]

    async def on_event(msg: Any) -> None:  # the log says when each run ends
        env = json.loads(msg.data)
        if env["type"] in ("RunCompleted", "RunFailed", "RunCanceled"):
            ended[env["aggregate_id"]] = env["type"]
            if len(ended) >= target[0]:
                all_done.set()

    sub = await observer.nc.subscribe(f"cairn.ev.{ws.name}.run.>", cb=on_event)
    target[0] = 4  # one job per agent first: starting the zygotes is not the jobs' cost
    await asyncio.gather(*(submit(ws, "bench-jobs", config) for _ in range(4)))
    await asyncio.wait_for(all_done.wait(), 60)
    ended.clear()
    all_done.clear()
    target[0] = jobs
    cpu0 = _cpu_by_part(_processes(stack, agents))
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(16)  # a busy submitter, not a thundering herd

    async def submit_one() -> str:
        async with gate:
            return await submit(ws, "bench-jobs", config)

    run_ids = await asyncio.gather(*(submit_one() for _ in range(jobs)))
    r[f"{key}submit_per_s"] = jobs / (time.perf_counter() - t0)
    await asyncio.wait_for(all_done.wait(), 600)
    r[f"{key}jobs_per_s"] = jobs / (time.perf_counter() - t0)
    spent = _spent(cpu0, _cpu_by_part(_processes(stack, agents)))
    for part, seconds in spent.items():  # where a job's CPU goes, in ms per job
        r[f"{key}cpu_ms_per_job_{part}"] = seconds / jobs * 1e3
    await sub.unsubscribe()
    assert set(run_ids) <= set(ended) and set(ended.values()) == {"RunCompleted"}
    return r


async def _logging(ws: AsyncWorkspace, stack: Stack, points: int) -> dict[str, float]:
    """Points/s of one script's log-and-flush, inside a job and as a plain process."""
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-log-"))
    (folder / "log.py").write_text(LOGGING)
    config = ScriptRunConfig(source_directory=folder, script="log.py", arguments=[points])

    def rate(text: str) -> float:
        return float(next(x for x in text.splitlines() if x.startswith("LOGGED")).split()[1])

    printed: list[str] = []
    run_id = await submit(ws, "bench-jobs", config)
    details = await follow(ws, run_id, out=printed.append, poll_s=0.05)
    assert details["status"] == "Completed", details
    env = {**os.environ, "CAIRN_HOME": str(stack.home), "CAIRN_LOG_LEVEL": "warning"}
    plain = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(folder / "log.py"), str(points)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return {"job_points_per_s": rate("".join(printed)), "plain_points_per_s": rate(plain.stdout)}


async def measure(
    stack: Stack, latency_jobs: int, jobs: int, points: int = 20000, *, headline: bool = False
) -> dict[str, Any]:
    """Every measurement; with ``headline``, only latency and warm-start throughput (what
    ``bench/cluster.py`` compares between a single node and a cluster)."""
    settings = load_settings(file=stack.home / "config.json")
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-job-"))
    script = folder / "noop.py"
    script.write_text(SCRIPT)
    config = ScriptRunConfig(source_directory=folder, script="noop.py")
    r: dict[str, Any] = {}
    agents = _agents(stack, 1)
    creds = Credentials.load_or_create(stack.home / "credentials.json")
    observer = await connect_bus(
        load_settings(
            file=stack.home / "config.json",
            nats_user=SERVICE_USER,
            nats_password=creds.service_password,
        ),
        name="bench-observer",
    )
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
            for _ in range(0 if headline else 2):  # the second counts (the first warms up)
                r.update(await _logging(ws, stack, points))
            if not headline:
                r["job_vs_plain_logging"] = r["job_points_per_s"] / r["plain_points_per_s"]

            agents += _agents(stack, 3)
            await _wait_agents(ws, 4)
            r["ceiling_jobs_per_s"] = await _spawn_all(script, jobs, 4)
            r.update(await _throughput(ws, observer, stack, agents, config, jobs, ""))
            r["median_job_run"] = statistics.median(lat)
            r["throughput_vs_ceiling"] = r["jobs_per_s"] / r["ceiling_jobs_per_s"]
            if headline:
                return r
            for proc in agents:  # the same again with every interpreter started cold
                proc.terminate()
            for proc in agents:
                proc.wait(30)
            agents[:] = _agents(stack, 4, warm=False)
            await _wait_agents(ws, 4, only=[a.pid for a in agents])
            r.update(await _throughput(ws, observer, stack, agents, config, jobs, "cold_"))
            for key in ("", "cold_"):
                r[f"{key}throughput_vs_ceiling"] = r[f"{key}jobs_per_s"] / r["ceiling_jobs_per_s"]
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            proc.wait(30)
        await observer.close()
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=20000)
    args = parser.parse_args()
    stack = EmbeddedStack(extra=["--local-slots", "0"])
    try:
        r = asyncio.run(measure(stack, args.latency_jobs, args.jobs, args.points))
    finally:
        stack.stop()
    print(json.dumps({k: round(v, 3) for k, v in r.items()}, indent=2))
    print(
        f"latency: job p50 {r['job_p50_ms']:.1f} ms (p95 {r['job_p95_ms']:.1f}) vs spawn p50"
        f" {r['floor_p50_ms']:.1f} ms (p95 {r['floor_p95_ms']:.1f}): floor +"
        f" {r['p50_over_floor_ms']:.1f} ms (goal <= +50 ms)"
    )
    print(
        f"logging: {r['job_points_per_s']:.0f} points/s inside a job vs"
        f" {r['plain_points_per_s']:.0f} from a plain process:"
        f" {r['job_vs_plain_logging']:.0%}"
    )
    for key, how in (("", "warm starts, the default"), ("cold_", "cold starts")):
        print(
            f"throughput ({how}): {r[f'{key}jobs_per_s']:.1f} jobs/s over 4 agents vs"
            f" {r['ceiling_jobs_per_s']:.1f} bare spawns/s:"
            f" {r[f'{key}throughput_vs_ceiling']:.0%} (goal >= 50%)"
        )
        prefix = f"{key}cpu_ms_per_job_"
        parts = [(k.removeprefix(prefix), v) for k, v in r.items() if k.startswith(prefix)]
        print("  CPU per job: " + ", ".join(f"{part} {ms:.1f} ms" for part, ms in parts))


if __name__ == "__main__":
    main()
