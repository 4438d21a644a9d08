"""Sweeps benchmark: a random-search sweep on Cairn beside Ray Tune on the same objective, and
beside the same trials submitted by hand.

One run. Cairn is the embedded stack (``cairn up --local-slots 4``: its local agent with 4
slots, warm starts), Ray a local Ray cluster started by ``ray.init(num_cpus=4)`` in a fresh
process of its own (no dashboard). Each side runs ``--trials`` trials of the same objective,
random sampling over the same space (``x`` uniform in [-5, 5], ``y`` one of 1, 2, 4, 8), at
most 4 at a time, no early termination; a trial reports ``--steps`` values of ``loss``:

1. **Cairn sweep**: ``HyperDriveConfig`` (``RandomParameterSampling``, ``max_total_runs``,
   ``max_concurrent_runs=4``) of a script that logs ``loss`` and flushes at every step (what
   a policy would need to see), from ``experiment.submit`` to the sweep's ``SweepEnded``.
2. **By hand**: the same trials (the sweep's own parameters) as plain jobs of the same script
   through the SDK, 4 at a time (a new one submitted as soon as one ends in the event log).
3. **Ray Tune**: ``Tuner(objective, param_space, TuneConfig(num_samples, metric, mode,
   max_concurrent_trials=4))`` whose function calls ``tune.report`` at every step;
   ``tuner.fit()`` timed (``ray.init`` reported apart).

Goals: Cairn's trials/s >= 2x Ray Tune's; the sweep within 1.2x of hand submission.

Ray Tune is installed only in the benchmark environment (``bench/requirements.txt``, installed under
the lock's constraints, which keep botocore at the version aiobotocore needs):

    python3 -m venv .bench
    PIP_CONSTRAINT=ops/requirements.lock .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/sweeps.py [--trials 100] [--steps 10] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

EXPERIMENT = "bench-sweeps"
TRIAL = """\
import argparse
from cairn.sdk import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--y", type=int)
p.add_argument("--steps", type=int, default=10)
a = p.parse_args()
run = Run.get_context()
for step in range(a.steps):
    run.log("loss", (a.x - 1.0) ** 2 + a.y / (step + 1), step=step)
    run.flush()
"""
SPACE_Y = (1, 2, 4, 8)


def objective(config: dict[str, Any]) -> None:  # Ray Tune's side of TRIAL
    from ray import tune

    for step in range(int(config["steps"])):
        tune.report({"loss": (config["x"] - 1.0) ** 2 + config["y"] / (step + 1)})


def ray_side(trials: int, steps: int, concurrency: int) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    folder = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    t0 = time.perf_counter()
    ray.init(
        num_cpus=concurrency,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(folder / "r"),
    )
    init_s = time.perf_counter() - t0
    tuner = tune.Tuner(
        objective,
        param_space={
            "x": tune.uniform(-5.0, 5.0),
            "y": tune.choice(list(SPACE_Y)),
            "steps": steps,
        },
        tune_config=tune.TuneConfig(
            num_samples=trials,
            metric="loss",
            mode="min",
            max_concurrent_trials=concurrency,
            search_alg=BasicVariantGenerator(random_state=1),
        ),
        run_config=tune.RunConfig(storage_path=str(folder / "results"), verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    errors = sum(1 for r in grid if r.error is not None)
    reports = [int(r.metrics["training_iteration"]) for r in grid if r.error is None]
    best = grid.get_best_result().metrics["loss"]
    ray.shutdown()
    assert errors == 0 and len(reports) == trials and set(reports) == {steps}, (errors, reports)
    return {"ray_init_s": init_s, "ray_fit_s": fit_s, "ray_best": best, "ray": ray.__version__}


async def cairn_side(trials: int, steps: int, concurrency: int) -> dict[str, Any]:
    from cairn.bus import connect as connect_bus
    from cairn.embedded._auth import SERVICE_USER, Credentials
    from cairn.sdk import (
        AsyncWorkspace,
        HyperDriveConfig,
        RandomParameterSampling,
        ScriptRunConfig,
        choice,
        connect,
        uniform,
    )
    from cairn.sdk._hyperdrive import get_sweep, submit_sweep
    from cairn.sdk._jobs import submit
    from cairn.settings import load_settings
    from jobs import _cpu_s
    from pipelines import Ends
    from tracking import EmbeddedStack

    src = Path(tempfile.mkdtemp(prefix="cairn-bench-sweep-"))
    (src / "trial.py").write_text(TRIAL)
    stack = EmbeddedStack(extra=["--local-slots", str(concurrency)])
    r: dict[str, Any] = {}

    def config(total: int, seed: int) -> HyperDriveConfig:
        return HyperDriveConfig(
            run_config=ScriptRunConfig(
                source_directory=src, script="trial.py", arguments=["--steps", steps]
            ),
            hyperparameter_sampling=RandomParameterSampling(
                {"x": uniform(-5.0, 5.0), "y": choice(*SPACE_Y)}, seed=seed
            ),
            primary_metric_name="loss",
            primary_metric_goal="MINIMIZE",
            max_total_runs=total,
            max_concurrent_runs=concurrency,
        )

    async def sweep(ws: AsyncWorkspace, ends: Ends, total: int, seed: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        run_id = await submit_sweep(ws, EXPERIMENT, config(total, seed))
        status = await ends.wait("s:" + run_id)
        took = time.perf_counter() - t0
        view = await get_sweep(ws, run_id)
        assert status == "Completed" and len(view["trials"]) == total, view
        return {"s": took, "view": view}

    async def by_hand(ws: AsyncWorkspace, ends: Ends, params: list[dict[str, Any]]) -> float:
        todo = list(params)

        async def slot() -> None:
            while todo:
                p = todo.pop(0)
                args = ["--steps", steps, "--x", p["x"], "--y", p["y"]]
                cfg = ScriptRunConfig(source_directory=src, script="trial.py", arguments=args)
                run_id = await submit(ws, EXPERIMENT, cfg)
                assert await ends.wait(run_id) == "RunCompleted"

        t0 = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(concurrency)))
        return time.perf_counter() - t0

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
        async with connect(load_settings(file=stack.home / "config.json")) as ws:
            ends = Ends(observer, ws.name)
            await ends.start()
            await sweep(ws, ends, concurrency, seed=2)  # zygotes, snapshot, caches
            cpu0 = _cpu_s(stack.services_pid)[0]
            done = await sweep(ws, ends, trials, seed=1)
            cpu1 = _cpu_s(stack.services_pid)[0]
            trials_view = sorted(done["view"]["trials"], key=lambda t: t["index"])
            params = [t["parameters"] for t in trials_view]
            r["sweep_s"] = done["s"]
            r["sweep_best"] = min(float(t["best"]) for t in trials_view)
            r["trial_end_ms"] = await trial_end_ms(observer, ws.name, done["view"])
            r["hand_s"] = await by_hand(ws, ends, params)
            cpu2 = _cpu_s(stack.services_pid)[0]
            r["services_cpu_ms_per_trial"] = {
                "sweep": (cpu1 - cpu0) / trials * 1e3,
                "hand": (cpu2 - cpu1) / trials * 1e3,
            }
            await ends.stop()
    finally:
        await observer.close()
        stack.stop()
    return r


async def trial_end_ms(conn: Any, ws: str, view: dict[str, Any]) -> dict[str, float]:
    """From each trial run's ``RunCompleted`` to the sweep's ``TrialEnded`` for it (the
    events' timestamps): what the controller adds per trial. Median and max, ms."""
    from cairn.bus import EventStore
    from cairn.proto import subjects
    from cairn.proto.events import RunCompleted, TrialEnded

    store = EventStore(conn)
    history = await store.read(subjects.event(ws, "sweep", view["run_id"]))
    ended = {
        r.envelope.data.index: r.envelope.timestamp
        for r in history
        if isinstance(r.envelope.data, TrialEnded)
    }
    gaps = []
    for trial in view["trials"]:
        runs = await store.read(subjects.event(ws, "run", trial["run_id"]))
        done = [r.envelope.timestamp for r in runs if isinstance(r.envelope.data, RunCompleted)]
        if done and trial["index"] in ended:
            gaps.append((ended[trial["index"]] - done[0]).total_seconds() * 1e3)
    gaps.sort()
    return {"median": gaps[len(gaps) // 2], "max": gaps[-1]} if gaps else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--side", choices=["both", "ray"], default="both", help=argparse.SUPPRESS)
    parser.add_argument("--cairn-only", action="store_true", help="skip Ray Tune")
    args = parser.parse_args()
    if args.side == "ray":  # in a fresh process of its own, as below
        print(json.dumps(ray_side(args.trials, args.steps, args.concurrency)))
        return
    r = asyncio.run(cairn_side(args.trials, args.steps, args.concurrency))
    if args.cairn_only:
        r["load"] = os.getloadavg()
        print(json.dumps(r, indent=2))
        print(
            f"{args.trials} trials: Cairn sweep {r['sweep_s']:.2f} s, by hand {r['hand_s']:.2f} s,"
            f" vs by hand {r['sweep_s'] / r['hand_s']:.2f}x (goal <= 1.2x);"
            f" RunCompleted -> TrialEnded {r['trial_end_ms']}"
        )
        return
    ray_run = subprocess.run(
        [sys.executable, __file__, "--side", "ray", *sys.argv[1:]],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if ray_run.returncode != 0:
        raise RuntimeError(f"Ray Tune side failed:\n{ray_run.stderr[-4000:]}")
    r.update(json.loads(ray_run.stdout.strip().splitlines()[-1]))
    r["load"] = os.getloadavg()
    print(json.dumps(r, indent=2))
    n = args.trials
    cairn_rate, ray_rate = n / r["sweep_s"], n / r["ray_fit_s"]
    print(
        f"{n} trials x {args.steps} reports, {args.concurrency} at a time:"
        f" Cairn sweep {r['sweep_s']:.2f} s ({cairn_rate:.2f} trials/s),"
        f" by hand {r['hand_s']:.2f} s ({n / r['hand_s']:.2f} trials/s),"
        f" Ray Tune {r['ray_fit_s']:.2f} s ({ray_rate:.2f} trials/s; ray.init"
        f" {r['ray_init_s']:.2f} s more)\n"
        f"  vs Ray Tune {cairn_rate / ray_rate:.2f}x (goal >= 2x);"
        f" vs by hand {r['sweep_s'] / r['hand_s']:.2f}x (goal <= 1.2x)\n"
        f"  services CPU per trial: sweep {r['services_cpu_ms_per_trial']['sweep']:.1f} ms,"
        f" by hand {r['services_cpu_ms_per_trial']['hand']:.1f} ms"
    )


if __name__ == "__main__":
    main()
