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

``--rounds R`` runs R sweep and by-hand pairs on the same stack (the same trials each round:
the sweep's seed is fixed), the side that goes first alternating, and reports each round's
ratio and the medians. Each round also prints where the time went, from the events' own
timestamps: the k-th run's end to the (k + concurrency)-th run's ``RunSubmitted`` (the
submission that end freed a slot for; for the sweep split at its ``TrialEnded`` and the next
``TrialProposed``), ``RunSubmitted`` -> ``RunAssigned`` -> ``RunStarted`` -> ``RunCompleted``
(medians and means), the first submission after the start and the end after the last run's;
and the ``SubmitJob`` requests sent (a trial's job sent twice counts twice).

Ray Tune is installed only in the benchmark environment (``bench/requirements.txt``, installed under
the lock's constraints, which keep botocore at the version aiobotocore needs):

    python3 -m venv .bench
    PIP_CONSTRAINT=ops/requirements.lock .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/sweeps.py [--trials 100] [--steps 10] [--concurrency 4] [--rounds 1]
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


async def cairn_side(trials: int, steps: int, concurrency: int, rounds: int) -> dict[str, Any]:
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
    r: dict[str, Any] = {"rounds": []}

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
        began = time.time()
        t0 = time.perf_counter()
        run_id = await submit_sweep(ws, EXPERIMENT, config(total, seed))
        status = await ends.wait("s:" + run_id)
        took = time.perf_counter() - t0
        view = await get_sweep(ws, run_id)
        assert status == "Completed" and len(view["trials"]) == total, view
        return {"s": took, "view": view, "began": began, "ended": began + took}

    async def by_hand(
        ws: AsyncWorkspace, ends: Ends, params: list[dict[str, Any]]
    ) -> dict[str, Any]:
        todo = list(params)
        run_ids: list[str] = []

        async def slot() -> None:
            while todo:
                p = todo.pop(0)
                args = ["--steps", steps, "--x", p["x"], "--y", p["y"]]
                cfg = ScriptRunConfig(source_directory=src, script="trial.py", arguments=args)
                run_id = await submit(ws, EXPERIMENT, cfg)
                run_ids.append(run_id)
                status = await ends.wait(run_id)
                if status != "RunCompleted":
                    raise RuntimeError(f"{run_id}: {status}: {await _ended_why(run_id)}")

        began = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(concurrency)))
        took = time.perf_counter() - t0
        return {"s": took, "run_ids": run_ids, "began": began, "ended": began + took}

    async def _ended_why(run_id: str) -> str:
        from cairn.bus import EventStore
        from cairn.proto import subjects

        history = await EventStore(observer).read(subjects.event(ws_name[0], "run", run_id))
        return repr(history[-1].envelope.data) if history else "no events"

    ws_name = [""]
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
            ws_name[0] = ws.name
            ends = Ends(observer, ws.name)
            await ends.start()
            submits = [0]  # SubmitJob requests seen (a trial's job sent again is one more)

            async def count(_msg: Any) -> None:
                submits[0] += 1

            counter = await observer.nc.subscribe(f"cairn.cmd.{ws.name}.job.submit", cb=count)
            await sweep(ws, ends, concurrency, seed=2)  # zygotes, snapshot, caches
            params: list[dict[str, Any]] = []
            for n in range(rounds):
                row: dict[str, Any] = {"load": os.getloadavg()[0]}
                # alternate which side goes first, so that a drift of the machine's load
                # over a round does not always fall on the same side
                for side in ("sweep", "hand") if n % 2 == 0 else ("hand", "sweep"):
                    cpu0, submits0 = _cpu_s(stack.services_pid)[0], submits[0]
                    if side == "sweep":
                        done = await sweep(ws, ends, trials, seed=1)  # the same trials each round
                        trials_view = sorted(done["view"]["trials"], key=lambda t: t["index"])
                        params = [t["parameters"] for t in trials_view]
                        row["sweep_s"] = done["s"]
                        row["sweep_best"] = min(float(t["best"]) for t in trials_view)
                        row["sweep_gaps"] = await sweep_gaps(observer, ws.name, done, concurrency)
                    else:
                        hand = await by_hand(ws, ends, params)
                        row["hand_s"] = hand["s"]
                        row["hand_gaps"] = await hand_gaps(observer, ws.name, hand, concurrency)
                    cpu = _cpu_s(stack.services_pid)[0] - cpu0
                    row[f"{side}_cpu_ms_per_trial"] = cpu / trials * 1e3
                    row[f"{side}_submit_jobs"] = submits[0] - submits0
                row["ratio"] = row["sweep_s"] / row["hand_s"]
                r["rounds"].append(row)
                print_round(n, row)
            await counter.unsubscribe()
            await ends.stop()
    finally:
        await observer.close()
        stack.stop()
    return r


# -- the per-gap breakdown, from the events' own timestamps ----------------------------------


async def _run_times(conn: Any, ws: str, run_ids: list[str]) -> list[dict[str, float]]:
    """Each run's RunSubmitted, RunAssigned, RunStarted and RunCompleted times (epoch s)."""
    from cairn.bus import EventStore
    from cairn.proto import subjects

    store = EventStore(conn)
    wanted = {"RunSubmitted", "RunAssigned", "RunStarted", "RunCompleted"}
    out = []
    for run_id in run_ids:
        history = await store.read(subjects.event(ws, "run", run_id))
        times: dict[str, float] = {}
        for rec in history:
            name = type(rec.envelope.data).__name__
            if name in wanted and name not in times:
                times[name] = rec.envelope.timestamp.timestamp()
        out.append(times)
    return out


def _stats(values: list[float]) -> dict[str, float]:
    """Median, mean and max of ``values`` (seconds), in ms."""
    if not values:
        return {}
    ms = sorted(v * 1e3 for v in values)
    return {"median": ms[len(ms) // 2], "mean": sum(ms) / len(ms), "max": ms[-1], "n": len(ms)}


def _common_gaps(
    runs: list[dict[str, float]], began: float, ended: float, concurrency: int
) -> dict[str, Any]:
    """The gaps every side has: the k-th run's end to the (k + concurrency)-th submission (the
    submission that end freed a slot for), submission to claim, claim to start, start to end,
    the first submission after the start and the end after the last run's."""
    submitted = sorted(t["RunSubmitted"] for t in runs)
    completed = sorted(t["RunCompleted"] for t in runs)
    return {
        "end_to_next_submit": _stats(
            [submitted[k + concurrency] - completed[k] for k in range(len(runs) - concurrency)]
        ),
        "submit_to_assigned": _stats([t["RunAssigned"] - t["RunSubmitted"] for t in runs]),
        "assigned_to_started": _stats([t["RunStarted"] - t["RunAssigned"] for t in runs]),
        "started_to_completed": _stats([t["RunCompleted"] - t["RunStarted"] for t in runs]),
        "first_submit_s": submitted[0] - began,
        "last_end_to_done_s": ended - completed[-1],
    }


async def sweep_gaps(conn: Any, ws: str, done: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """A sweep's gaps; the end-to-next-submission one split at the sweep's own events: the
    trial run's ``RunCompleted`` -> the sweep's ``TrialEnded`` -> the next ``TrialProposed``
    -> that trial run's ``RunSubmitted`` (the scheduler accepted its job)."""
    from cairn.bus import EventStore
    from cairn.proto import subjects
    from cairn.proto.events import SweepEnded, TrialEnded, TrialProposed

    view = done["view"]
    trials = sorted(view["trials"], key=lambda t: t["index"])
    runs = await _run_times(conn, ws, [t["run_id"] for t in trials])
    history = await EventStore(conn).read(subjects.event(ws, "sweep", view["run_id"]))
    proposed: dict[int, float] = {}
    ended: dict[int, float] = {}
    sweep_ended = done["ended"]
    for rec in history:
        data, at = rec.envelope.data, rec.envelope.timestamp.timestamp()
        if isinstance(data, TrialProposed):
            proposed[data.index] = at
        elif isinstance(data, TrialEnded):
            ended[data.index] = at
        elif isinstance(data, SweepEnded):
            sweep_ended = at
    gaps = _common_gaps(runs, done["began"], done["ended"], concurrency)
    # trial ends in the order they were recorded; the k-th frees the slot of proposal k + c
    order = sorted(ended, key=lambda i: ended[i])
    follow = [(i, k + concurrency) for k, i in enumerate(order) if k + concurrency < len(trials)]
    gaps["end_to_trial_ended"] = _stats([ended[i] - runs[i]["RunCompleted"] for i in ended])
    gaps["trial_ended_to_proposed"] = _stats([proposed[j] - ended[i] for i, j in follow])
    gaps["proposed_to_submitted"] = _stats(
        [runs[j]["RunSubmitted"] - proposed[j] for j in proposed]
    )
    gaps["last_end_to_sweep_ended_s"] = sweep_ended - max(t["RunCompleted"] for t in runs)
    return gaps


async def hand_gaps(conn: Any, ws: str, hand: dict[str, Any], concurrency: int) -> dict[str, Any]:
    runs = await _run_times(conn, ws, hand["run_ids"])
    return _common_gaps(runs, hand["began"], hand["ended"], concurrency)


GAP_ROWS = [
    ("end_to_next_submit", "run end -> next RunSubmitted"),
    ("end_to_trial_ended", "  RunCompleted -> TrialEnded"),
    ("trial_ended_to_proposed", "  TrialEnded -> next TrialProposed"),
    ("proposed_to_submitted", "  TrialProposed -> RunSubmitted"),
    ("submit_to_assigned", "RunSubmitted -> RunAssigned"),
    ("assigned_to_started", "RunAssigned -> RunStarted"),
    ("started_to_completed", "RunStarted -> RunCompleted"),
]


def print_round(n: int, row: dict[str, Any]) -> None:
    sg, hg = row["sweep_gaps"], row["hand_gaps"]
    print(
        f"round {n + 1}: load {row['load']:.1f}, sweep {row['sweep_s']:.2f} s, by hand"
        f" {row['hand_s']:.2f} s, ratio {row['ratio']:.2f}x; services CPU per trial"
        f" {row['sweep_cpu_ms_per_trial']:.1f} / {row['hand_cpu_ms_per_trial']:.1f} ms;"
        f" SubmitJob requests {row['sweep_submit_jobs']} / {row['hand_submit_jobs']}",
        file=sys.stderr,
    )
    print(f"  {'gap (ms: median / mean)':38} {'sweep':>17} {'by hand':>17}", file=sys.stderr)
    for key, label in GAP_ROWS:
        cells = []
        for gaps in (sg, hg):
            s = gaps.get(key)
            cells.append(f"{s['median']:7.1f} / {s['mean']:7.1f}" if s else f"{'-':>17}")
        print(f"  {label:38} {cells[0]:>17} {cells[1]:>17}", file=sys.stderr)
    print(
        f"  first submission after the start (s)   {sg['first_submit_s']:17.3f}"
        f" {hg['first_submit_s']:17.3f}\n"
        f"  last run's end -> done (s)             {sg['last_end_to_done_s']:17.3f}"
        f" {hg['last_end_to_done_s']:17.3f}",
        file=sys.stderr,
    )


def summary(r: dict[str, Any]) -> dict[str, float]:
    """Medians over the rounds: of each side's time and of the rounds' ratios."""

    def median(values: list[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    rounds = r["rounds"]
    return {
        "sweep_s": median([x["sweep_s"] for x in rounds]),
        "hand_s": median([x["hand_s"] for x in rounds]),
        "ratio": median([x["ratio"] for x in rounds]),
        "sweep_cpu_ms_per_trial": median([x["sweep_cpu_ms_per_trial"] for x in rounds]),
        "hand_cpu_ms_per_trial": median([x["hand_cpu_ms_per_trial"] for x in rounds]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="sweep and by-hand pairs on one stack, which side goes first alternating",
    )
    parser.add_argument("--side", choices=["both", "ray"], default="both", help=argparse.SUPPRESS)
    parser.add_argument("--cairn-only", action="store_true", help="skip Ray Tune")
    args = parser.parse_args()
    if args.side == "ray":  # in a fresh process of its own, as below
        print(json.dumps(ray_side(args.trials, args.steps, args.concurrency)))
        return
    r = asyncio.run(cairn_side(args.trials, args.steps, args.concurrency, args.rounds))
    r.update(summary(r))
    ratios = " ".join(f"{x['ratio']:.2f}" for x in r["rounds"])
    vs_hand = f"vs by hand {r['ratio']:.2f}x (median of the rounds: {ratios}; goal <= 1.2x)"
    if args.cairn_only:
        r["load"] = os.getloadavg()
        print(json.dumps(r, indent=2))
        print(
            f"{args.trials} trials, {len(r['rounds'])} rounds (medians): Cairn sweep"
            f" {r['sweep_s']:.2f} s, by hand {r['hand_s']:.2f} s, {vs_hand}"
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
        f"{n} trials x {args.steps} reports, {args.concurrency} at a time, {len(r['rounds'])}"
        f" rounds (medians): Cairn sweep {r['sweep_s']:.2f} s ({cairn_rate:.2f} trials/s),"
        f" by hand {r['hand_s']:.2f} s ({n / r['hand_s']:.2f} trials/s),"
        f" Ray Tune {r['ray_fit_s']:.2f} s ({ray_rate:.2f} trials/s; ray.init"
        f" {r['ray_init_s']:.2f} s more)\n"
        f"  vs Ray Tune {cairn_rate / ray_rate:.2f}x (goal >= 2x); {vs_hand}\n"
        f"  services CPU per trial: sweep {r['sweep_cpu_ms_per_trial']:.1f} ms,"
        f" by hand {r['hand_cpu_ms_per_trial']:.1f} ms"
    )


if __name__ == "__main__":
    main()
