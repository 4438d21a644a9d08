"""Serving benchmark: one small scikit-learn model answering JSON requests three ways.

In one run, the same load (``--connections`` concurrent HTTP/1.1 keep-alive connections from
a minimal asyncio load generator in a process of its own, each sending the next request as soon as
its answer came) against:

* **cairn**: an online endpoint of the embedded stack (``cairn up`` in a subprocess, as a
  user runs it): the gateway checks the key, asks the endpoint's traffic, sends the body over
  NATS to the deployment's queue group; the replica's agent relays it to the replica process,
  whose ``run()`` answers;
* **mlflow**: ``mlflow models serve`` of the same model (saved with ``mlflow.sklearn``,
  ``--env-manager local``);
* **floor**: a bare ASGI app under uvicorn calling the same entry script's ``run()`` in its
  own process: what any HTTP server in front of this ``run()`` costs at least.

The model is a ``LogisticRegression`` fitted on iris; each request asks one prediction of
one row (``{"inputs": [[...]]}``). Every side has one process that answers (one replica, one
MLflow worker, one uvicorn worker). The goals: Cairn's requests/s at least 1.5x MLflow's and
at least 60 % of the floor's; Cairn's p99 at most 3x the floor's.

MLflow is installed only in the benchmark environment:

    python3 -m venv .bench && PIP_CONSTRAINT=ops/requirements.lock \\
        .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/serving.py [--requests 4000] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cairn.embedded import free_port

SCORE = """
import json
import os
from pathlib import Path

import joblib
import numpy as np

model = None


def init():
    global model
    model = joblib.load(next(Path(os.environ["AZUREML_MODEL_DIR"]).rglob("model.pkl")))


def run(raw_data):
    rows = np.asarray(json.loads(raw_data)["inputs"], dtype=float)
    return {"predictions": model.predict(rows).tolist()}
"""

FLOOR_APP = """
import json

import score

score.init()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = [(b"content-type", b"application/json")]
    if scope["method"] != "POST":  # the benchmark's readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer = json.dumps(score.run(body.decode())).encode()
    headers.append((b"content-length", str(len(answer)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
"""

#: one iris row per request
BODY = json.dumps({"inputs": [[5.9, 3.0, 5.1, 1.8]]}).encode()


def make_model(folder: Path) -> Path:
    """The fitted model as ``model.pkl`` (joblib) in ``folder/model``, and the entry script in
    ``folder/src``; returns ``folder``."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model" / "model.pkl")
    (folder / "src").mkdir(exist_ok=True)
    (folder / "src" / "score.py").write_text(SCORE)
    return folder


# -- the load generator ---------------------------------------------------------------------


def load(url: str, headers: dict[str, str], requests: int, connections: int) -> dict[str, Any]:
    """``requests`` POSTs of BODY over ``connections`` keep-alive connections (after a
    warm-up of 200): requests/s over the whole burst, and each request's latency
    percentiles. A minimal HTTP/1.1 client on asyncio streams under uvloop, so that the load
    generator costs far less per request than any of the servers (httpx costs about as much
    as the floor's server itself)."""
    import urllib.parse

    import uvloop

    parts = urllib.parse.urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(request)
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines if b": " in line)
        fields = {k.lower(): v for k, v in fields.items()}
        if b"content-length" in fields:
            body = await reader.readexactly(int(fields[b"content-length"]))
        else:  # chunked
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        if not status_line.split(b" ")[1] == b"200" or b"predictions" not in body:
            raise RuntimeError(f"{url} answered {status_line!r}: {body[:300]!r}")
        return body

    async def burst(count: int) -> tuple[list[float], float]:
        latencies: list[float] = []
        left = count

        async def worker() -> None:
            nonlocal left
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                while left > 0:
                    left -= 1
                    t = time.perf_counter()
                    await ask(reader, writer)
                    latencies.append(time.perf_counter() - t)
            finally:
                writer.close()
                await writer.wait_closed()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return latencies, time.perf_counter() - t0

    async def main() -> dict[str, Any]:
        await burst(200)
        latencies, took = await burst(requests)
        return {
            "requests_per_s": requests / took,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000,
        }

    return uvloop.run(main())


def _measure(url: str, headers: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """The load from a fresh process (it shares the CPUs, not the heap, with the server)."""
    ctx = multiprocessing.get_context("spawn")
    before = os.getloadavg()[0]
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        result = pool.submit(load, url, headers, args.requests, args.connections).result()
    # how busy the machine was (it is shared): the 1-minute load average around the burst
    result["load_1m"] = [round(before, 1), round(os.getloadavg()[0], 1)]
    return result


def _wait_http(url: str, proc: subprocess.Popen[Any], within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:  # it answers: up
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the three sides ------------------------------------------------------------------------


def floor_side(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    (folder / "src" / "floor_app.py").write_text(FLOOR_APP)
    port = free_port()
    env = {**os.environ, "AZUREML_MODEL_DIR": str(folder / "model")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=folder / "src",
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/score"
        _wait_http(url, server)
        return _measure(url, {"Content-Type": "application/json"}, args)
    finally:
        _stop(server)


def mlflow_side(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    import joblib
    import mlflow.sklearn

    target = folder / "mlflow-model"
    mlflow.sklearn.save_model(joblib.load(folder / "model" / "model.pkl"), str(target))
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            str(target),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        # it runs `uvicorn` from PATH: this environment's
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", server)
        url = f"http://127.0.0.1:{port}/invocations"
        return _measure(url, {"Content-Type": "application/json"}, args)
    finally:
        _stop(server)


def cairn_side(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tracking import EmbeddedStack  # the `cairn up` harness of the tracking benchmark

    port = free_port()
    stack = EmbeddedStack(["--gateway-port", str(port)])
    try:
        key, workspace = asyncio.run(_deploy(stack.home, folder, args))
        url = f"http://127.0.0.1:{port}/endpoints/{workspace}/bench/score"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        result = _measure(url, headers, args)
        print("cairn", json.dumps(result), flush=True)
        return result
    finally:  # its replica is stopped gracefully first: that may take a while
        stack.proc.send_signal(signal.SIGINT)
        try:
            stack.proc.wait(180)
        except subprocess.TimeoutExpired:
            stack.proc.kill()
            stack.proc.wait()


async def _deploy(home: Path, folder: Path, args: argparse.Namespace) -> tuple[str, str]:
    """The model registered and deployed (``args.replicas`` replicas) with all the traffic;
    returns the endpoint's key and the workspace."""
    from cairn.sdk import connect
    from cairn.settings import load_settings

    settings = load_settings(file=home / "config.json")
    async with connect(settings) as ws:
        staging, path = await ws.models.upload(folder / "model" / "model.pkl")
        await ws.models.register("iris", path, staging_id=staging)
        keys = await ws.endpoints.create("bench")
        await ws.endpoints.deploy(
            "bench",
            "blue",
            entry_script="score.py",
            source_directory=folder / "src",
            models=[("iris", 1)],
            replicas=args.replicas,
            all_traffic=True,
        )
        row = await ws.endpoints.wait("bench", "blue", timeout=300)
        if row["status"] != "Succeeded":
            raise RuntimeError(f"the deployment is {row['status']}: {row['error']}")
        return keys["primary"], settings.workspace


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"{'':<34} {'requests/s':>11} {'p50 (ms)':>9} {'p99 (ms)':>9} {'load 1m':>11}")
    labels = {
        "floor": "floor (ASGI + run(), uvicorn)",
        "mlflow": "mlflow models serve",
        "cairn": "cairn online endpoint",
    }
    for side, label in labels.items():
        r = results[side]
        load_1m = f"{r['load_1m'][0]:.1f}-{r['load_1m'][1]:.1f}"
        print(
            f"{label:<34} {r['requests_per_s']:>11,.0f} {r['p50_ms']:>9,.2f}"
            f" {r['p99_ms']:>9,.2f} {load_1m:>11}"
        )
    c, m, f = results["cairn"], results["mlflow"], results["floor"]
    goals = [
        ("cairn / mlflow requests/s", c["requests_per_s"] / m["requests_per_s"], ">= 1.50", True),
        ("cairn / floor requests/s", c["requests_per_s"] / f["requests_per_s"], ">= 0.60", True),
        ("cairn p99 / floor p99", c["p99_ms"] / f["p99_ms"], "<= 3.00", False),
    ]
    print(f"\n{'goal':<34} {'ratio':>11} {'wanted':>9} {'met':>9}")
    for label, ratio, wanted, at_least in goals:
        bound = float(wanted.split()[1])
        met = ratio >= bound if at_least else ratio <= bound
        print(f"{label:<34} {ratio:>11,.2f} {wanted:>9} {'yes' if met else 'NO':>9}")
    print(json.dumps({**results, "args": vars(args)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per side, after a warm-up")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=1, help="of the Cairn deployment")
    parser.add_argument(
        "--only", choices=["floor", "mlflow", "cairn"], action="append", help="run these only"
    )
    args = parser.parse_args()
    folder = make_model(Path(tempfile.mkdtemp(prefix="serving-bench-")))
    sides = {"floor": floor_side, "mlflow": mlflow_side, "cairn": cairn_side}
    results = {
        name: side(folder, args) for name, side in sides.items() if name in (args.only or sides)
    }
    for name, r in results.items():
        print(name, json.dumps(r), flush=True)
    if len(results) == len(sides):
        report(results, args)
