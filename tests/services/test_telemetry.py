"""Operational metrics and health: /metrics, /healthz, /readyz (cairn.telemetry)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cairn.bus import Connection, stream_position
from cairn.cli import cli
from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import ComputeSpec, CreateCompute
from cairn.proto.commands import CreateExperiment, GetRun, ListRuns
from cairn.proto.jobs import JobSpec, SubmitJob
from cairn.rpc import Client
from cairn.settings import Settings
from cairn.telemetry import Readiness, ops_server, readiness
from tests.conftest import Agents, add_people

Labels = dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def value(text: str, sample: str, labels: Labels) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@pytest.fixture
async def ops() -> AsyncIterator[httpx.AsyncClient]:
    """The ops routes of this process (which runs the services), over HTTP."""
    port = free_port()
    async with ops_server("127.0.0.1", port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http


async def scrape(http: httpx.AsyncClient) -> str:
    got = await http.get("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain; version=")
    return got.text


async def test_requests_are_counted_by_outcome_and_timed(
    client: Client, ops: httpx.AsyncClient
) -> None:
    refused = {"service": "tracking", "verb": "run.get", "kind": "query", "outcome": "not_found"}
    listed = {"service": "tracking", "verb": "run.list", "kind": "query", "outcome": "ok"}
    timed = {"service": "tracking", "verb": "run.list"}
    before = await scrape(ops)
    with pytest.raises(NotFound):
        await client.ask(GetRun(run_id="no-such-run"))
    await client.ask(ListRuns())
    after = await scrape(ops)
    for labels in (refused, listed):
        was = value(before, "cairn_rpc_requests_total", labels) or 0
        assert value(after, "cairn_rpc_requests_total", labels) == was + 1
    count = "cairn_rpc_request_duration_seconds_count"
    assert value(after, count, timed) == (value(before, count, timed) or 0) + 1
    slowest = {**timed, "le": "+Inf"}
    assert value(after, "cairn_rpc_request_duration_seconds_bucket", slowest) == value(
        after, count, timed
    )
    assert value(after, "process_resident_memory_bytes", {}) is not None


async def test_projection_lag_returns_to_zero(client: Client, ops: httpx.AsyncClient) -> None:
    accepted = await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="lagging"))
    await client.ask(ListRuns(min_seq=accepted.seq))  # tracking has applied it
    text = await scrape(ops)
    applied = value(text, "cairn_projection_applied_sequence", {"projection": "tracking"})
    assert applied is not None and applied >= accepted.seq
    lags: list[float | None] = []

    async def caught_up() -> bool:
        text = await scrape(ops)
        lags.append(value(text, "cairn_projection_lag_messages", {"projection": "tracking"}))
        return lags[-1] == 0

    async with asyncio.timeout(20):
        while not await caught_up():
            await asyncio.sleep(0.05)
    assert None not in lags
    assert readiness.ready and readiness.state()["projection tracking"]


async def test_queued_jobs_and_agent_slots_are_gauged(
    client: Client,
    people: dict[str, Connection],
    admin_conn: Connection,
    agents: Agents,
    ops: httpx.AsyncClient,
) -> None:
    compute = "q" + uuid.uuid4().hex[:8]  # a target of this test alone
    await add_people(admin_conn, client.workspace, "olga")
    olga = Client(people["olga"], client.workspace)  # a compute operator
    spec = ComputeSpec(kind="cluster")
    await olga.send(CreateCompute(command_id=uuid.uuid4().hex, name=compute, spec=spec))
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="gauged"))
    submit = SubmitJob(
        command_id=uuid.uuid4().hex,
        run_id=uuid.uuid4().hex,
        experiment_name="gauged",
        compute=compute,
        job=JobSpec(command=["true"]),
    )
    await client.send(submit)
    queued: list[float | None] = []

    async def seen() -> bool:
        text = await scrape(ops)
        queued.append(value(text, "cairn_scheduler_queued_jobs", {"compute": compute}))
        return queued[-1] == 1

    async with asyncio.timeout(20):
        while not await seen():
            await asyncio.sleep(0.1)
    text = await scrape(ops)
    assert value(text, "cairn_scheduler_running_jobs", {"compute": compute}) == 0

    other = "s" + uuid.uuid4().hex[:8]
    await agents.start(compute=other, slots=3)
    text = await scrape(ops)
    assert value(text, "cairn_agent_slots", {"compute": other}) == 3
    assert value(text, "cairn_agent_busy_slots", {"compute": other}) == 0


def test_stream_position_reads_both_reply_forms() -> None:
    assert stream_position("$JS.ACK.EVENTS.c1.1.42.7.1732312312312312312.5") == (42, 47)
    assert stream_position("$JS.ACK.hub.ACCHASH.EVENTS.c1.1.42.7.1732312312.0.tok") == (42, 42)


def test_readiness_needs_every_part_and_check() -> None:
    r = Readiness()
    assert not r.ready  # nothing registered yet
    r.expect("tracking")
    assert not r.ready
    r.mark_ready("tracking")
    assert r.ready
    behind = [True]
    r.add_check("key", "projection tracking", lambda: not behind[0])
    assert not r.ready and r.state() == {"tracking": True, "projection tracking": False}
    behind[0] = False
    assert r.ready
    r.mark_not_ready("tracking")
    assert not r.ready
    r.withdraw("tracking")
    r.remove_check("key")
    assert not r.ready and r.state() == {}


async def test_readyz_is_503_while_a_part_is_not_ready(ops: httpx.AsyncClient) -> None:
    readiness.expect("probe")
    try:
        got = await ops.get("/readyz")
        assert got.status_code == 503
        assert got.json()["ready"] is False and got.json()["parts"]["probe"] is False
        assert (await ops.get("/healthz")).status_code == 200
    finally:
        readiness.withdraw("probe")


async def test_a_port_in_use_is_refused_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"127.0.0.1:{port}"):
            async with ops_server("127.0.0.1", port):
                pass


def test_ops_host_without_a_port_is_refused() -> None:
    result = CliRunner().invoke(cli, ["serve", "tracking", "--ops-host", "0.0.0.0"])
    assert result.exit_code == 2 and "--ops-port" in result.output


async def test_serve_answers_healthz_readyz_and_metrics(
    services: None, service_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path),
        "CAIRN_NATS_USER": service_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": service_settings.nats_password or "",
        "CAIRN_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cairn.cli import main; main()",
        "serve",
        "registry",
        "--nats-url",
        service_settings.nats_url,
        "--ops-port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready: httpx.Response | None = None
            async with asyncio.timeout(30):
                while ready is None or ready.status_code != 200:
                    with contextlib.suppress(httpx.TransportError):
                        ready = await http.get("/readyz")
                    await asyncio.sleep(0.1)
            assert ready.json()["parts"] == {"registry": True, "projection registry": True}
            assert (await http.get("/healthz")).status_code == 200
            text = (await http.get("/metrics")).text
            assert value(text, "cairn_projection_lag_messages", {"projection": "registry"}) == 0
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"ops_serving" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
