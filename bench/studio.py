"""Studio benchmark: the runs table and a metric's history over HTTP, Cairn's gateway beside
``mlflow server`` with a SQLite store, on the same experiments of 1,000, 10,000 and 100,000
runs.

For each size, both systems hold one experiment whose runs each have a tag ``team`` (one of
four), a parameter-like tag ``lr`` and two metrics (``loss``, ``acc``) of ``--steps`` points.
Then, over HTTP, each is asked (median of ``--repeat`` tries, after one warm-up):

* **first page**: the newest 100 runs (Cairn ``GET /api/w/<ws>/runs``; MLflow
  ``POST /api/2.0/mlflow/runs/search`` with ``max_results=100``);
* **sorted by a metric**: the 100 runs with the lowest ``loss``;
* **filtered by a tag**: the first 100 runs with ``team = 'b'``;
* **metric history**: every point of one run's ``loss`` (that run logs ``--history`` points,
  5,000 by default: a training curve, as a run page charts it).

Cairn's runs are made through its commands (the log is the truth: nothing is written to a read
model directly); MLflow's rows are inserted into its own schema with SQLite, which is faster
than its API and changes nothing in what is measured: the queries of its server.

    .bench/bin/python bench/studio.py --sizes 1000 10000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cairn.embedded import free_port

TEAMS = ("a", "b", "c", "d")


#: a query that takes longer than this once is not repeated (its one time is reported)
SLOW_S = 10.0
#: a peer's query that takes longer than this is cut off and reported as at least this long
CUT_S = 120.0


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    """The median of ``repeat`` timed calls after a warm-up; a call slower than ``SLOW_S`` is
    timed once; one cut off after ``CUT_S`` counts as ``CUT_S`` (a lower bound)."""
    samples = []
    for attempt in range(repeat + 1):
        t0 = time.perf_counter()
        try:
            fn()
        except httpx.TimeoutException:
            return CUT_S
        took = time.perf_counter() - t0
        if took > SLOW_S:
            return took
        if attempt:  # the first call warms up
            samples.append(took)
    return statistics.median(samples)


def _steps(i: int, runs: int, steps: int, history: int) -> int:
    """Points per metric of run ``i``: ``steps``, but ``history`` for the middle run, whose
    history the benchmark reads (a training run's curve, as the run page charts it)."""
    return history if i == runs // 2 else steps


def _loss(i: int, step: int) -> float:
    return round(1.0 / (1 + step) + (i % 997) / 1000.0, 6)


# --- MLflow -----------------------------------------------------------------------------------


class MlflowServer:
    """``mlflow server`` over a SQLite store holding ``runs`` runs of one experiment."""

    def __init__(self, runs: int, steps: int, history: int) -> None:
        logging.disable(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.folder = Path(tempfile.mkdtemp(prefix="mlflow-studio-"))
        db = self.folder / "mlflow.db"
        client = MlflowClient(f"sqlite:///{db}")  # makes the schema, as the server would
        self.experiment_id = client.create_experiment(
            "bench", artifact_location=str(self.folder / "artifacts")
        )
        self.run_ids = self._insert(db, runs, steps, history)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{db}",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=CUT_S)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start")
            time.sleep(0.5)

    def _insert(self, db: Path, runs: int, steps: int, history: int) -> list[str]:
        con = sqlite3.connect(db)
        now = int(time.time() * 1000)
        ids = [uuid.uuid4().hex for _ in range(runs)]
        exp = int(self.experiment_id)
        with con:
            con.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,"
                " user_id, status, start_time, end_time, source_version, lifecycle_stage,"
                " artifact_uri, experiment_id) VALUES (?, ?, 'UNKNOWN', '', '', 'bench',"
                " 'FINISHED', ?, ?, '', 'active', '', ?)",
                [(rid, f"run-{i}", now + i, now + i + 1, exp) for i, rid in enumerate(ids)],
            )
            con.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [("team", TEAMS[i % 4], rid) for i, rid in enumerate(ids)]
                + [("lr", str(10 ** -(1 + i % 4)), rid) for i, rid in enumerate(ids)],
            )
            for name, value in (("loss", _loss), ("acc", lambda i, s: 1 - _loss(i, s))):
                con.executemany(
                    "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
                    " VALUES (?, ?, ?, ?, ?, 0)",
                    (
                        (name, value(i, s), now + s, rid, s)
                        for i, rid in enumerate(ids)
                        for s in range(_steps(i, runs, steps, history))
                    ),
                )
                con.executemany(
                    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                    " VALUES (?, ?, ?, ?, 0, ?)",
                    (
                        (name, value(i, n - 1), now, n - 1, rid)
                        for i, rid in enumerate(ids)
                        for n in [_steps(i, runs, steps, history)]
                    ),
                )
        con.close()
        return ids

    def _search(self, **body: Any) -> int:
        reply = self.http.post(
            "/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [self.experiment_id], "max_results": 100, **body},
        )
        reply.raise_for_status()
        return len(reply.json().get("runs", []))

    def measure(self, repeat: int, history_run: int, points: int) -> dict[str, float]:
        run_id = self.run_ids[history_run]

        def history() -> int:
            reply = self.http.get(
                "/api/2.0/mlflow/metrics/get-history",
                params={"run_id": run_id, "metric_key": "loss"},
            )
            reply.raise_for_status()
            return len(reply.json()["metrics"])

        def page(**body: Any) -> None:
            assert self._search(**body) == 100  # a whole page, or the call was cut off

        def curve() -> None:
            assert history() == points

        return {
            "first_page_s": _median_s(page, repeat),
            "by_metric_s": _median_s(lambda: page(order_by=["metrics.loss ASC"]), repeat),
            "by_tag_s": _median_s(lambda: page(filter="tags.team = 'b'"), repeat),
            "history_s": _median_s(curve, repeat),
        }

    def stop(self) -> None:
        self.http.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:  # stuck in a query it was cut off from
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


# --- Cairn ------------------------------------------------------------------------------------


class CairnStack:
    """``cairn up`` in a subprocess over a temporary home (with its studio), as a user runs it;
    an HTTP client signed in to the studio."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cairn-studio-"))
        env = {
            **os.environ,
            "CAIRN_HOME": str(self.home),
            "CAIRN_LOG_FORMAT": "json",
            "CAIRN_LOG_LEVEL": "warning",
        }
        self.gateway_port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from cairn.cli import main; main()",
                "up",
                "--port",
                str(free_port()),
                "--gateway-port",
                str(self.gateway_port),
                "--local-slots",
                "0",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "cairn is up" in line:
                break
        else:
            raise RuntimeError("cairn up did not start")
        creds = json.loads((self.home / "credentials.json").read_text())
        self.user = creds["client_user"]
        self.password = creds["people"][self.user]["password"]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.gateway_port}", timeout=300)
        self._sign_in()

    def _sign_in(self) -> None:
        import re

        page = self.http.get("/login")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        reply = self.http.post(
            "/login",
            data={"username": self.user, "password": self.password, "_csrf": csrf.group(1)},
        )
        assert reply.status_code == 303, reply.text

    def populate(self, runs: int, steps: int, history: int, concurrency: int = 32) -> list[str]:
        """The runs, in the order of their index (``ids[runs // 2]`` has the long history)."""
        return asyncio.run(self._populate(runs, steps, history, concurrency))

    async def _populate(self, runs: int, steps: int, history: int, concurrency: int) -> list[str]:
        from cairn.sdk import connect
        from cairn.settings import load_settings

        settings = load_settings(file=self.home / "config.json")
        ids: list[str] = [""] * runs
        async with connect(settings) as ws:
            exp = await ws.experiment("bench")
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(runs):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    run = await exp.start_run(display_name=f"run-{i}")
                    await run.set_tags({"team": TEAMS[i % 4], "lr": str(10 ** -(1 + i % 4))})
                    for s in range(_steps(i, runs, steps, history)):
                        run.log("loss", _loss(i, s), step=s)
                        run.log("acc", 1 - _loss(i, s), step=s)
                    await run.complete()
                    ids[i] = run.id

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ids

    def _runs(self, experiment: str = "bench", **params: Any) -> int:
        reply = self.http.get(
            "/api/w/default/runs", params={"experiment": experiment, "limit": 100, **params}
        )
        reply.raise_for_status()
        return len(reply.json()["runs"])

    def measure(self, repeat: int, run_id: str, points: int) -> dict[str, float]:
        def history() -> int:
            reply = self.http.get(f"/api/w/default/runs/{run_id}/history", params={"name": "loss"})
            reply.raise_for_status()
            return len(reply.json()["points"])

        assert self._runs(order="metrics.loss ASC") == 100
        assert history() == points
        return {
            "first_page_s": _median_s(lambda: self._runs(), repeat),
            "by_metric_s": _median_s(lambda: self._runs(order="metrics.loss ASC"), repeat),
            "by_tag_s": _median_s(lambda: self._runs(filter="tags.team = 'b'"), repeat),
            "history_s": _median_s(history, repeat),
        }

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


# --- the run ----------------------------------------------------------------------------------

ROWS = (
    ("first page (100 newest)", "first_page_s"),
    ("100 lowest loss", "by_metric_s"),
    ("100 with tag team=b", "by_tag_s"),
    ("metric history (1 run)", "history_s"),  # of --history points
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--steps", type=int, default=10, help="points per metric per run")
    parser.add_argument(
        "--history", type=int, default=5000, help="points of the run whose history is read"
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    random.seed(7)
    results: dict[int, dict[str, dict[str, float]]] = {}
    for size in args.sizes:
        stack = CairnStack()
        try:
            t0 = time.perf_counter()
            ids = stack.populate(size, args.steps, args.history)
            made_s = time.perf_counter() - t0
            cairn = stack.measure(args.repeat, ids[size // 2], args.history)
        finally:
            stack.stop()
        print(f"{size:>7,} runs: Cairn made them at {size / made_s:,.0f} runs/s", flush=True)
        for label, key in ROWS:
            print(f"  cairn  {label:<26} {cairn[key] * 1000:9.1f} ms", flush=True)
        peer = MlflowServer(size, args.steps, args.history)
        try:
            mlflow = peer.measure(args.repeat, size // 2, args.history)
        finally:
            peer.stop()
        results[size] = {"cairn": cairn, "mlflow": mlflow, "made_runs_per_s": size / made_s}
        print(f"{size:>7,} runs, Cairn vs MLflow:", flush=True)
        for label, key in ROWS:
            c, m = cairn[key], mlflow[key]
            cut = ">=" if m >= CUT_S else "  "  # the peer was cut off: a lower bound
            print(
                f"  {label:<26} cairn {c * 1000:9.1f} ms   mlflow {cut}{m * 1000:9.1f} ms"
                f"   {cut}{m / c:7.1f}x",
                flush=True,
            )
    if len(args.sizes) > 1:
        lo, hi = min(args.sizes), max(args.sizes)
        print(f"growth from {lo:,} to {hi:,} runs (time at {hi:,} / time at {lo:,}):")
        for label, key in ROWS:
            c = results[hi]["cairn"][key] / results[lo]["cairn"][key]
            m = results[hi]["mlflow"][key] / results[lo]["mlflow"][key]
            print(f"  {label:<26} cairn {c:7.1f}x   mlflow {m:7.1f}x")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
