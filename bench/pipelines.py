"""Pipelines benchmark: a fan-out/fan-in pipeline on Cairn beside Metaflow's local runtime and
beside the same jobs submitted by hand.

One run, on the embedded stack (``cairn up --local-slots 4``: its local agent with 4 slots,
warm starts, the agent's interpreter as the environment):

1. **Pipeline**: ``start`` -> ``--width`` parallel ``w<i>`` -> ``join``, every step a no-op
   Python script (``python noop.py``), as a CLI v2 pipeline file (``depends_on`` edges, a
   literal pipeline input passed to every step), from loading the file to the pipeline's
   ``PipelineEnded``. The input is new in every round, so nothing is reused.
2. **By hand**: the same ``width + 2`` jobs submitted through the SDK in topological order
   (``start``, then the ``width`` middle jobs at once, then ``join``), each wave waited for in
   the event log.
3. **Reused**: the first pipeline's file submitted again unchanged: every step is reused.
4. **Metaflow**: the same DAG as a flow (``start`` with ``foreach`` over ``width`` items,
   ``work``, ``join``, and the ``end`` step Metaflow requires), ``python flow.py run
   --max-workers 4`` with the local datastore and metadata, in a subprocess, timed from its
   start to its exit.

Goals: the pipeline's wall time >= 5x faster than Metaflow; <= 1.25x the hand-submitted jobs;
the fully reused run >= 20x faster than the first.

Metaflow is installed only in the benchmark environment (``bench/requirements.txt``, installed under
the lock's constraints, which keep botocore at the version aiobotocore needs):

    python3 -m venv .bench
    PIP_CONSTRAINT=ops/requirements.lock .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/pipelines.py [--width 48] [--rounds 1] [--slots 4]
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
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cairn.bus import Connection
from cairn.bus import connect as connect_bus
from cairn.embedded._auth import SERVICE_USER, Credentials
from cairn.sdk import AsyncWorkspace, ScriptRunConfig, connect, load_pipeline_file, submit_pipeline
from cairn.sdk._jobs import submit
from cairn.settings import load_settings
from jobs import _cpu_s
from steptimes import Recorder, breakdown, format_breakdown, job_phases
from tracking import EmbeddedStack

NOOP = "import sys\n"
EXPERIMENT = "bench-pipelines"
FLOW = '''\
from metaflow import FlowSpec, step


class FanFlow(FlowSpec):
    """start -> {width} x work -> join -> end, every step a no-op."""

    @step
    def start(self):
        self.items = list(range({width}))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FanFlow()
'''


def pipeline_yaml(width: int, nonce: str) -> str:
    """``start`` -> ``w00`` .. ``w<width-1>`` -> ``join``: no-op Python steps."""

    def step(name: str, extra: str, after: list[str]) -> str:
        deps = f"\n    depends_on: [{', '.join(after)}]" if after else ""
        return (
            f"  {name}:\n    code: ./src\n"
            f"    command: python noop.py {extra} ${{{{inputs.nonce}}}}\n"
            f"    inputs: {{nonce: '${{{{parent.inputs.nonce}}}}'}}{deps}\n"
        )

    middle = [f"w{i:02d}" for i in range(width)]
    return (
        "type: pipeline\n"
        f"experiment_name: {EXPERIMENT}\n"
        "settings: {default_compute: local}\n"
        f"inputs: {{nonce: {nonce}}}\n"
        "jobs:\n"
        + step("start", "start", [])
        + "".join(step(name, name, ["start"]) for name in middle)
        + step("join", "join", middle)
    )


class Ends:
    """Which runs, pipelines and sweeps have ended, from the log (a service connection: people may
    not read it), each waitable."""

    def __init__(self, observer: Connection, ws: str) -> None:
        self.observer, self.ws = observer, ws
        self.ended: dict[str, str] = {}
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.recorder = Recorder()  # every event, for the timeline of each run

    async def start(self) -> None:
        self.sub = await self.observer.nc.subscribe(f"cairn.ev.{self.ws}.>", cb=self._on)

    async def _on(self, msg: Any) -> None:
        env = json.loads(msg.data)
        self.recorder.add(env)
        kind = env["type"]
        if kind in ("RunCompleted", "RunFailed", "RunCanceled"):
            key, status = env["aggregate_id"], kind
        elif kind in ("PipelineEnded", "SweepEnded"):  # keyed "p:<run id>", "s:<run id>"
            key, status = f"{kind[0].lower()}:{env['aggregate_id']}", env["data"]["status"]
        else:
            return
        self.ended[key] = status
        found = self.waiting.pop(key, None)
        if found is not None and not found.done():
            found.set_result(status)

    async def wait(self, key: str, timeout: float = 600) -> str:
        if key in self.ended:
            return self.ended[key]
        fut = self.waiting.setdefault(key, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout)

    async def stop(self) -> None:
        await self.sub.unsubscribe()


async def run_pipeline(ws: AsyncWorkspace, ends: Ends, path: Path) -> tuple[float, dict[str, Any]]:
    """Seconds from loading ``path`` to the pipeline's end, and the pipeline's view (with
    ``submit_s``: the seconds until ``SubmitPipeline`` was accepted)."""
    wall, t0 = time.time(), time.perf_counter()
    sent = await submit_pipeline(ws, load_pipeline_file(path))
    submitted = time.perf_counter() - t0
    status = await ends.wait("p:" + sent.run_id)
    took = time.perf_counter() - t0
    view = await ws.run(sent.run_id).pipeline()
    assert status == "Completed", view
    return took, {**view, "submit_s": submitted, "run_id": sent.run_id, "t_client": wall}


async def run_by_hand(
    ws: AsyncWorkspace, ends: Ends, src: Path, width: int, nonce: str
) -> tuple[float, list[str]]:
    """Seconds for the same jobs submitted in topological order, each wave waited for, and
    their run ids."""

    async def job(name: str) -> str:
        config = ScriptRunConfig(source_directory=src, script="noop.py", arguments=[name, nonce])
        return await submit(ws, EXPERIMENT, config)

    t0 = time.perf_counter()
    every: list[str] = []
    for wave in (["start"], [f"w{i:02d}" for i in range(width)], ["join"]):
        run_ids = await asyncio.gather(*(job(name) for name in wave))
        statuses = await asyncio.gather(*(ends.wait(r) for r in run_ids))
        assert set(statuses) == {"RunCompleted"}, statuses
        every += run_ids
    return time.perf_counter() - t0, every


def run_metaflow(folder: Path, width: int, workers: int) -> float:
    """Seconds of ``python flow.py run`` (local runtime, datastore and metadata)."""
    flow = folder / "flow.py"
    flow.write_text(FLOW.replace("{width}", str(width)))
    env = {
        **os.environ,
        "USERNAME": "bench",
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(folder),
    }
    cmd = [sys.executable, str(flow), "--no-pylint", "--quiet", "run", "--max-workers"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [*cmd, str(workers)], cwd=folder, env=env, capture_output=True, text=True, timeout=1800
    )
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"metaflow run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return took


async def measure(
    stack: EmbeddedStack, width: int, rounds: int, workers: int, peer: bool = True
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-pipe-"))
    (folder / "src").mkdir()
    (folder / "src" / "noop.py").write_text(NOOP)
    creds = Credentials.load_or_create(stack.home / "credentials.json")
    observer = await connect_bus(
        load_settings(
            file=stack.home / "config.json",
            nats_user=SERVICE_USER,
            nats_password=creds.service_password,
        ),
        name="bench-observer",
    )
    r: dict[str, Any] = {"pipeline_s": [], "hand_s": [], "reused_s": [], "metaflow_s": []}
    r["submit_s"] = {"pipeline": [], "reused": []}
    r["services_cpu_s"] = {"pipeline": [], "hand": [], "reused": []}
    r["timeline"] = {"pipeline": [], "reused": [], "hand": []}
    waves = [["start"], [f"w{i:02d}" for i in range(width)], ["join"]]
    try:
        async with connect(load_settings(file=stack.home / "config.json")) as ws:
            ends = Ends(observer, ws.name)
            await ends.start()
            warm = folder / "warm.yml"  # zygotes started, the snapshot uploaded, caches filled
            warm.write_text(pipeline_yaml(width, "w" + uuid.uuid4().hex[:8]))
            await run_pipeline(ws, ends, warm)
            for k in range(rounds):
                nonce = "n" + uuid.uuid4().hex[:8]
                path = folder / f"round{k}.yml"
                path.write_text(pipeline_yaml(width, nonce))
                cpu0 = _cpu_s(stack.services_pid)[0]
                took, view = await run_pipeline(ws, ends, path)
                cpu1 = _cpu_s(stack.services_pid)[0]
                assert len(view["steps"]) == width + 2
                assert not any(s["reused_run_id"] for s in view["steps"]), view
                r["pipeline_s"].append(took)
                r["submit_s"]["pipeline"].append(view["submit_s"])
                line = breakdown(ends.recorder, view["run_id"], waves, view["t_client"])
                r["timeline"]["pipeline"].append(line)
                r["services_cpu_s"]["pipeline"].append(cpu1 - cpu0)
                took, by_hand = await run_by_hand(ws, ends, folder / "src", width, nonce)
                r["hand_s"].append(took)
                r["timeline"]["hand"].append(job_phases(ends.recorder, by_hand))
                cpu2 = _cpu_s(stack.services_pid)[0]
                r["services_cpu_s"]["hand"].append(cpu2 - cpu1)
                took, view = await run_pipeline(ws, ends, path)
                r["services_cpu_s"]["reused"].append(_cpu_s(stack.services_pid)[0] - cpu2)
                assert all(s["reused_run_id"] for s in view["steps"]), view
                r["reused_s"].append(took)
                r["submit_s"]["reused"].append(view["submit_s"])
                line = breakdown(ends.recorder, view["run_id"], waves, view["t_client"])
                r["timeline"]["reused"].append(line)
                if not peer:
                    r["metaflow_s"].append(float("nan"))
                    continue
                mf = folder / f"metaflow{k}"
                mf.mkdir()
                r["metaflow_s"].append(await asyncio.to_thread(run_metaflow, mf, width, workers))
            await ends.stop()
    finally:
        await observer.close()
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=48, help="parallel middle steps")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--slots", type=int, default=4, help="local agent slots = Metaflow workers")
    parser.add_argument(
        "--cairn-only", action="store_true", help="skip Metaflow (its figures print as nan)"
    )
    args = parser.parse_args()
    import metaflow

    # no studio: nothing here reads it, and another stack on the machine may hold its port
    stack = EmbeddedStack(extra=["--local-slots", str(args.slots), "--gateway-port", "0"])
    try:
        r = asyncio.run(measure(stack, args.width, args.rounds, args.slots, not args.cairn_only))
    finally:
        stack.stop()
    r["versions"] = {"metaflow": metaflow.__version__, "python": sys.version.split()[0]}
    r["load"] = os.getloadavg()
    timeline = r.pop("timeline")
    print(json.dumps(r, indent=2))
    for kind in ("pipeline", "reused"):
        for k, line in enumerate(timeline[kind]):
            print(format_breakdown(f"round {k + 1} {kind}", line))
    for k, phases in enumerate(timeline["hand"]):
        print(f"round {k + 1} by hand, per job, median / max:")
        for label, (m, x) in phases.items():
            print(f"    {label:<52} {m:8.1f} / {x:.1f} ms")
    steps = args.width + 2
    for k in range(args.rounds):
        p, h, u, m = (r[x][k] for x in ("pipeline_s", "hand_s", "reused_s", "metaflow_s"))
        print(
            f"round {k + 1}: {steps}-step pipeline {p:.2f} s, by hand {h:.2f} s, reused {u:.2f} s,"
            f" Metaflow {m:.2f} s ({steps + 1} tasks)\n"
            f"  vs Metaflow {m / p:.1f}x faster (goal >= 5x); vs by hand {p / h:.2f}x"
            f" (goal <= 1.25x); reused {p / u:.1f}x faster than the first (goal >= 20x)"
        )
    cpu = r["services_cpu_s"]
    print(
        "services CPU per run (median): "
        + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in cpu.items())
    )


if __name__ == "__main__":
    main()
