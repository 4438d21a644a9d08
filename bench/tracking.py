"""Tracking benchmark: Cairn's embedded stack beside MLflow with a SQLite backend store.

In one run:

* metric points logged until all of them are queryable: Cairn ``run.log`` + ``flush`` + read
  back, vs MLflow ``log_batch`` (1,000 metrics per call, its limit);
* per-call cost of ``run.log`` vs ``mlflow.log_metric`` (median and p99);
* reading back a 100k-point history: Cairn ``run.get_metrics(name)`` vs MLflow
  ``get_metric_history``;
* runs created with 10 tags and completed, per second.

With ``--mlflow-api``, one comparison of the same ``mlflow`` client against two servers:
``log_batch`` (1,000 metrics per call) until every point is queryable through
``get_metric_history``, then ``log_batch`` of 10 metrics per call (one step of
``mlflow.log_metrics``), against Cairn's MLflow API (the gateway of ``cairn up``, an API
token) and against ``mlflow server`` with a SQLite backend store.

MLflow is installed only in the benchmark environment:

    python3 -m venv .bench && .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/tracking.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cairn.embedded import free_port
from cairn.sdk import Experiment, Workspace


def _count_in_read_model(run: Any, name: str) -> int:
    """How many points of ``name`` the metrics read model holds, once it has applied
    everything this client logged (read-your-writes through ``min_seq``)."""
    from cairn.proto.metrics import GetMetrics

    core = run._core.workspace
    q = GetMetrics(run_id=run.id, name=name, min_seq=core.seen_metrics_seq)
    return int(run._ws._run(core.client.ask(q)).data[name]["count"])


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


class EmbeddedStack:
    """``cairn up`` in a subprocess over a temporary home, as a user runs it."""

    def __init__(self, extra: list[str] | None = None, home: Path | None = None) -> None:
        self.home = home or Path(tempfile.mkdtemp(prefix="cairn-bench-"))
        port = free_port()
        while str(port) in (extra or []):  # not the port given to the gateway a moment ago
            port = free_port()
        env = {
            **os.environ,
            "CAIRN_HOME": str(self.home),
            "CAIRN_LOG_FORMAT": "json",
            "CAIRN_LOG_LEVEL": "warning",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from cairn.cli import main; main()",
                "up",
                "--port",
                str(port),
                *(extra or []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "cairn is up" in line:
                break
        else:
            raise RuntimeError("cairn up did not start")

    def workspace(self) -> Workspace:
        return Workspace.from_config(self.home / "config.json")

    @property
    def services_pid(self) -> int:
        """The process the services run in (``cairn up``)."""
        return self.proc.pid

    def server_pids(self) -> list[int]:
        """The nats-server processes (the one ``cairn up`` started)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "nats-server"], capture_output=True, text=True
        )
        return [int(p) for p in found.stdout.split()]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def cairn_side(points: int, calls: int, runs: int) -> dict[str, float]:
    stack = EmbeddedStack()
    try:
        return cairn_workload(stack.workspace(), points, calls, runs)
    finally:
        stack.stop()


def cairn_workload(ws: Workspace, points: int, calls: int, runs: int) -> dict[str, float]:
    """The Cairn side's measurements against whatever stack ``ws`` reaches (``bench/cluster.py``
    runs it against a single node and a cluster)."""
    r: dict[str, float] = {}
    exp = Experiment(ws, "bench")
    run = exp.start_logging()
    t0 = time.perf_counter()
    for step in range(points):
        run.log("loss", 1.0 / (step + 1), step=step)
    run.flush()  # every point acknowledged as stored; then the read model must have them
    assert _count_in_read_model(run, "loss") == points
    r["ingest_points_per_s"] = points / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    history = run.get_metrics("loss")["loss"]
    r["history_read_s"] = time.perf_counter() - t0
    assert len(history) == points

    samples = []
    for i in range(calls):
        t = time.perf_counter_ns()
        run.log("per_call", i)
        samples.append((time.perf_counter_ns() - t) / 1000)
    run.complete()
    r["log_call_median_us"], r["log_call_p99_us"] = statistics.median(samples), _p99(samples)

    tags = {f"tag{i}": f"value{i}" for i in range(10)}
    t0 = time.perf_counter()
    for _ in range(runs):
        each = exp.start_logging()
        each.set_tags(tags)
        each.complete()
    r["runs_per_s"] = runs / (time.perf_counter() - t0)
    return r


def mlflow_side(points: int, calls: int, runs: int) -> dict[str, float]:
    import logging

    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp_id = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    run_id = client.create_run(exp_id).info.run_id
    r: dict[str, float] = {}

    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    for start in range(0, points, 1000):
        batch = [
            Metric("loss", 1.0 / (s + 1), now, s) for s in range(start, min(start + 1000, points))
        ]
        client.log_batch(run_id, metrics=batch)
    got = client.get_metric_history(run_id, "loss")
    r["ingest_points_per_s"] = points / (time.perf_counter() - t0)
    assert len(got) == points

    t0 = time.perf_counter()
    history = client.get_metric_history(run_id, "loss")
    r["history_read_s"] = time.perf_counter() - t0
    assert len(history) == points

    samples = []
    with mlflow.start_run(run_id=run_id):
        for i in range(calls):
            t = time.perf_counter_ns()
            mlflow.log_metric("per_call", i, step=i)
            samples.append((time.perf_counter_ns() - t) / 1000)
    r["log_call_median_us"], r["log_call_p99_us"] = statistics.median(samples), _p99(samples)

    tags = [RunTag(f"tag{i}", f"value{i}") for i in range(10)]
    t0 = time.perf_counter()
    for _ in range(runs):
        each = client.create_run(exp_id, tags={t.key: t.value for t in tags}).info.run_id
        client.set_terminated(each)
    r["runs_per_s"] = runs / (time.perf_counter() - t0)
    return r


#: the small batch: what ``mlflow.log_metrics({...}, step=i)`` sends once a step for a
#: handful of metrics (loss, accuracy, learning rate...)
SMALL_BATCH = 10
SMALL_CALLS = 200


def mlflow_client_side(uri: str, token: str, points: int) -> dict[str, float]:
    """``log_batch`` of ``points`` metric points, 1,000 a call (the most one call takes),
    then read back until all of them are there; then ``SMALL_CALLS`` calls of
    ``SMALL_BATCH`` metrics, one step each. The same client, whatever server ``uri``
    names."""
    import logging

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"bench-{time.time_ns()}")
    run_id = client.create_run(exp_id).info.run_id
    now = int(time.time() * 1000)
    samples = []
    t0 = time.perf_counter()
    for start in range(0, points, 1000):
        batch = [
            Metric("loss", 1.0 / (s + 1), now, s) for s in range(start, min(start + 1000, points))
        ]
        t = time.perf_counter()
        client.log_batch(run_id, metrics=batch)
        samples.append((time.perf_counter() - t) * 1000)
    while len(client.get_metric_history(run_id, "loss")) < points:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    small = []
    for step in range(SMALL_CALLS):
        batch = [Metric(f"m{k}", 1.0 / (step + k + 1), now, step) for k in range(SMALL_BATCH)]
        t = time.perf_counter()
        client.log_batch(run_id, metrics=batch)
        small.append((time.perf_counter() - t) * 1000)
    client.set_terminated(run_id)
    return {
        "log_batch_points_per_s": points / elapsed,
        "log_batch_median_ms": statistics.median(samples),
        "small_batch_median_ms": statistics.median(small),
    }


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _wait_http(url: str, proc: subprocess.Popen[Any], within_s: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered at {url}")


def _wait_token(url: str, token: str, within_s: float = 30) -> None:
    """Until the server has loaded the new token (a reload follows ``create_token``)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + within_s
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def mlflow_api(points: int) -> None:
    """Cairn's MLflow API beside ``mlflow server`` (SQLite), the same client for both."""
    from cairn.embedded._users import create_token

    port = free_port()
    stack = EmbeddedStack(["--gateway-port", str(port)])
    try:
        _, token, _ = create_token(stack.home)
        uri = f"http://127.0.0.1:{port}/mlflow/default"
        _wait_token(f"{uri}/api/2.0/mlflow/experiments/search", token)
        cairn = _in_fresh_process(mlflow_client_side, uri, token, points)
    finally:
        stack.stop()
    folder = Path(tempfile.mkdtemp(prefix="mlflow-server-bench-"))
    mport = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(mport),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{mport}/health", server)
        mlflow = _in_fresh_process(mlflow_client_side, f"http://127.0.0.1:{mport}", "", points)
    finally:
        server.terminate()
        server.wait(30)
    print(f"{'mlflow.log_batch, 1,000 a call':<40} {'cairn':>12} {'mlflow':>12} {'advantage':>10}")
    c, m = cairn["log_batch_points_per_s"], mlflow["log_batch_points_per_s"]
    print(f"{'points until queryable (pts/s)':<40} {c:>12,.0f} {m:>12,.0f} {c / m:>9,.1f}x")
    c, m = cairn["log_batch_median_ms"], mlflow["log_batch_median_ms"]
    print(f"{'one call, median (ms)':<40} {c:>12,.2f} {m:>12,.2f} {m / c:>9,.1f}x")
    c, m = cairn["small_batch_median_ms"], mlflow["small_batch_median_ms"]
    label = f"{SMALL_BATCH} metrics a call, median (ms)"
    print(f"{label:<40} {c:>12,.2f} {m:>12,.2f} {m / c:>9,.1f}x")
    print(json.dumps({"cairn": cairn, "mlflow": mlflow, "points": points}))


def report(cairn: dict[str, float], mlflow: dict[str, float], args: argparse.Namespace) -> None:
    rows = [
        ("points logged until queryable (pts/s)", "ingest_points_per_s", True),
        (f"read {args.points:,}-point history (s)", "history_read_s", False),
        ("log call, median (µs)", "log_call_median_us", False),
        ("log call, p99 (µs)", "log_call_p99_us", False),
        ("runs with 10 tags, completed (runs/s)", "runs_per_s", True),
    ]
    print(f"{'':<40} {'cairn':>12} {'mlflow':>12} {'cairn advantage':>16}")
    for label, key, higher_better in rows:
        c, m = cairn[key], mlflow[key]
        advantage = c / m if higher_better else m / c
        print(f"{label:<40} {c:>12,.2f} {m:>12,.2f} {advantage:>15,.1f}x")
    print(json.dumps({"cairn": cairn, "mlflow": mlflow, "args": vars(args)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--mlflow-api",
        action="store_true",
        help="only: the same mlflow client against Cairn's MLflow API and mlflow server",
    )
    args = parser.parse_args()
    if args.mlflow_api:
        mlflow_api(args.points)
        sys.exit(0)
    # each side in a fresh process: neither pays for the other's heap (garbage collection)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        mlflow_result = pool.submit(mlflow_side, args.points, args.calls, args.runs).result()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        cairn_result = pool.submit(cairn_side, args.points, args.calls, args.runs).result()
    report(cairn_result, mlflow_result, args)
