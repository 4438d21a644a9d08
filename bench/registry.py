"""Registry benchmark: model versions registered per second, Cairn beside MLflow.

One run: versions of ONE model name registered by 1 client, then by 8 concurrent clients (the
contended case: every client races for the next version number), against Cairn's embedded stack
(``cairn up`` in its own process) and MLflow's ``create_model_version`` with a SQLite store.
Afterwards each side's versions are listed and duplicates counted (must be zero).

Beside them, the floor of any registry that stores a version as one fsynced event: a bare
responder (its own process, nothing but nats-py) that answers each request after one
compare-and-set publish to one subject of a stream on the same nats-server configuration
(``sync_interval: always``).

    python3 -m venv .bench && .bench/bin/pip install -e . -r bench/requirements.txt
    .bench/bin/python bench/registry.py [--versions 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cairn.bus import connect
from cairn.proto.registry import ListModels, RegisterModelVersion
from cairn.rpc import Client
from cairn.sdk import Experiment, Workspace
from cairn.settings import load_settings


def _split(total: int, clients: int) -> list[int]:
    return [total // clients + (1 if i < total % clients else 0) for i in range(clients)]


def cairn_side(versions: int) -> dict[str, Any]:
    from tracking import EmbeddedStack  # the same `cairn up` harness as the tracking benchmark

    stack = EmbeddedStack()
    try:
        return cairn_workload(stack.home, versions)
    finally:
        stack.stop()


def cairn_workload(home: Path, versions: int) -> dict[str, Any]:
    """The Cairn side's measurements against the stack whose ``config.json`` lies in ``home``
    (``bench/cluster.py`` runs it against a single node and a cluster)."""
    run = Experiment(Workspace.from_config(home / "config.json"), "bench").start_logging()
    src = Path(home) / "model.bin"
    src.write_bytes(b"weights" * 100)
    run.upload_file("outputs/model.bin", str(src))
    run.complete()
    settings = load_settings(file=home / "config.json")
    return asyncio.run(_cairn_rates(settings, run.id, versions))


async def _cairn_rates(settings: Any, run_id: str, versions: int) -> dict[str, Any]:
    conns = [await connect(settings) for _ in range(8)]
    clients = [Client(c, settings.workspace) for c in conns]
    r: dict[str, Any] = {}
    try:
        for n_clients in (1, 8):
            name = f"model-{n_clients}"

            async def worker(client: Client, count: int, name: str = name) -> None:
                for _ in range(count):
                    await client.send(
                        RegisterModelVersion(
                            command_id=uuid.uuid4().hex,
                            name=name,
                            path="outputs/model.bin",
                            run_id=run_id,
                        )
                    )

            t0 = time.perf_counter()
            shares = zip(clients, _split(versions, n_clients), strict=False)
            await asyncio.gather(*(worker(c, k) for c, k in shares))
            r[f"versions_per_s_{n_clients}"] = versions / (time.perf_counter() - t0)
            listed = (await clients[0].ask(ListModels(name=name, min_seq=0, wait_s=10))).data
            got = [m["version"] for m in listed]
            while len(got) < versions:  # the read model catches up
                await asyncio.sleep(0.1)
                got = [m["version"] for m in (await clients[0].ask(ListModels(name=name))).data]
            r[f"duplicates_{n_clients}"] = sum(c - 1 for c in Counter(got).values() if c > 1)
            r[f"gapless_{n_clients}"] = sorted(got) == list(range(1, versions + 1))
    finally:
        for c in conns:
            await c.close()
    return r


def _floor_responder(url: str, ready: Any) -> None:
    import nats

    async def serve() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="FLOOR", subjects=["floor.>"])
        last = {"seq": 0}
        lock = asyncio.Lock()  # one writer per subject, as in the registry

        async def handle(msg: Any) -> None:
            async with lock:
                ack = await js.publish(
                    "floor.ev.model",
                    msg.data,
                    headers={
                        "Nats-Msg-Id": uuid.uuid4().hex,
                        "Nats-Expected-Last-Subject-Sequence": str(last["seq"]),
                    },
                )
                last["seq"] = ack.seq
            await msg.respond(json.dumps({"seq": ack.seq}).encode())

        tasks: set[asyncio.Task[None]] = set()

        async def on_msg(msg: Any) -> None:  # one task per request, as the registry's responder
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await nc.subscribe("floor.cmd", "floor", cb=on_msg)
        await nc.flush()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


def floor_side(versions: int) -> dict[str, Any]:
    import tempfile

    import nats

    from cairn.embedded import NatsServer, free_port

    async def rates() -> dict[str, Any]:
        server = NatsServer(
            Path(tempfile.mkdtemp(prefix="floor-bench-")), port=free_port(), auth=False
        )
        await server.start()
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        responder = ctx.Process(target=_floor_responder, args=(server.url, ready), daemon=True)
        responder.start()
        r: dict[str, Any] = {}
        try:
            await asyncio.to_thread(ready.wait, 60)
            conns = [await nats.connect(server.url) for _ in range(8)]
            body = json.dumps({"name": "m", "path": "outputs/model.bin"}).encode()
            for n_clients in (1, 8):

                async def worker(nc: Any, count: int) -> None:
                    for _ in range(count):
                        await nc.request("floor.cmd", body, timeout=10)

                t0 = time.perf_counter()
                shares = zip(conns, _split(versions, n_clients), strict=False)
                await asyncio.gather(*(worker(c, k) for c, k in shares))
                r[f"versions_per_s_{n_clients}"] = versions / (time.perf_counter() - t0)
            for c in conns:
                await c.close()
        finally:
            responder.terminate()
            server.stop()
        return r

    return asyncio.run(rates())


def mlflow_side(versions: int) -> dict[str, Any]:
    import logging
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    source = f"runs:/{run_id}/model"
    r: dict[str, Any] = {}
    for n_clients in (1, 8):
        name = f"model-{n_clients}"
        client.create_registered_model(name)
        errors: list[str] = []
        lock = threading.Lock()

        def worker(
            count: int, name: str = name, errors: list[str] = errors, lock: Any = lock
        ) -> None:
            own = MlflowClient(uri, registry_uri=uri)
            for _ in range(count):
                try:
                    own.create_model_version(name, source, run_id=run_id)
                except Exception as exc:  # SQLite lock contention and the like: counted
                    with lock:
                        errors.append(type(exc).__name__)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n_clients) as pool:
            list(pool.map(worker, _split(versions, n_clients)))
        elapsed = time.perf_counter() - t0
        found = client.search_model_versions(f"name='{name}'", max_results=100_000)
        got = [int(v.version) for v in found]
        r[f"versions_per_s_{n_clients}"] = len(got) / elapsed
        r[f"duplicates_{n_clients}"] = sum(c - 1 for c in Counter(got).values() if c > 1)
        r[f"gapless_{n_clients}"] = sorted(got) == list(range(1, len(got) + 1))
        r[f"errors_{n_clients}"] = dict(Counter(errors))
    return r


def report(cairn: dict[str, Any], mlflow: dict[str, Any], floor: dict[str, Any]) -> None:
    print(f"{'':<34} {'cairn':>10} {'mlflow':>10} {'ratio':>8} {'floor':>10} {'of floor':>9}")
    for n in (1, 8):
        c, m, f = (side[f"versions_per_s_{n}"] for side in (cairn, mlflow, floor))
        print(
            f"{f'versions/s, {n} client(s)':<34} {c:>10,.1f} {m:>10,.1f} {c / m:>7.1f}x"
            f" {f:>10,.1f} {c / f:>8.0%}"
        )
        print(
            f"{f'  duplicates / gapless, {n}':<34} {cairn[f'duplicates_{n}']:>5} "
            f"{cairn[f'gapless_{n}']!s:>4} {mlflow[f'duplicates_{n}']:>5} "
            f"{mlflow[f'gapless_{n}']!s:>4}  mlflow errors: {mlflow[f'errors_{n}']}"
        )
    print(json.dumps({"cairn": cairn, "mlflow": mlflow, "floor": floor}))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        mlflow_result = pool.submit(mlflow_side, args.versions).result()
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        cairn_result = pool.submit(cairn_side, args.versions).result()
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        floor_result = pool.submit(floor_side, args.versions).result()
    report(cairn_result, mlflow_result, floor_result)
