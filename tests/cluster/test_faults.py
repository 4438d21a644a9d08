"""Nothing acknowledged is lost on a 3-node JetStream cluster, whatever one node goes through.

Each test runs the services (in this process, connected to every node's URL) and an agent,
drives the seeded workload of :mod:`tests.cluster.workload` through them, and meanwhile
breaks the cluster one way: the EVENTS stream leader killed (SIGKILL) mid-burst, a follower
killed and brought back, a node stopped (SIGSTOP) past the election timeout and continued, a
rolling restart of every node, a node cut off from its peers by a network partition (network
namespaces), a node whose every packet is dropped (a black hole: clients and peers alike get
silence, not a refusal). When the node is back and every acknowledged job has ended, the
checker (:mod:`tests.cluster.checker`) must find nothing wrong.

Seeded: ``CAIRN_FAULT_SEED`` (default 22). Each fault runs ``CAIRN_FAULT_REPEAT`` times in a
row (default 1), each round with the next seed::

    CAIRN_FAULT_REPEAT=5 pytest tests/cluster/test_faults.py -k leader
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from cairn.bus import connect
from cairn.bus._connect import PING_INTERVAL_S
from cairn.embedded import NatsCluster
from cairn.embedded._auth import AGENT_USER, SERVICE_USER
from cairn.log import get_logger
from cairn.proto.commands import Query
from tests.cluster import stack
from tests.cluster.checker import check, wait_for_jobs
from tests.cluster.netns import Namespaces, unavailable
from tests.cluster.workload import History, Workload, describe
from tests.conftest import LEAKS_SOCKETS

log = get_logger("tests.faults")

REPEAT = int(os.environ.get("CAIRN_FAULT_REPEAT", "1"))
SEED = int(os.environ.get("CAIRN_FAULT_SEED", "22"))
ROUNDS = pytest.mark.parametrize("round_", range(REPEAT), ids=lambda r: f"round{r}")
#: how long the workload issues new operations; the fault comes inside it
WORKLOAD_S = 14.0
#: the fault starts once this many commands were acknowledged (mid-burst), or after FAULT_AT_S
FAULT_AFTER_ACKS = 40
FAULT_AT_S = 4.0
#: JetStream's RAFT election timeout is at most a few seconds: a pause past it lets the other
#: nodes elect a new leader while the paused one still believes it leads
PAUSE_S = 8.0
DOWN_S = 4.0
PARTITION_S = 8.0
#: longer than a client takes to find a silent connection dead (``PING_INTERVAL_S`` x 3,
#: 15 s): the clients on the node must give it up and move, not wait for the heal
BLACK_HOLE_S = 16.0

Fault = Callable[[NatsCluster, History], Awaitable[str]]


async def _mid_burst(history: History) -> None:
    """Until the workload is well under way."""
    deadline = time.monotonic() + FAULT_AT_S
    while len(history.acked) < FAULT_AFTER_ACKS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _scenario(
    cluster: NatsCluster, tmp: Path, seed: int, fault: Fault
) -> tuple[History, list[str]]:
    """Services and an agent over ``cluster``, the workload, ``fault`` inside it; then the
    checker, which must find nothing wrong. The workload's history and its clients' errors."""
    settings = stack.service_settings(cluster.settings(user=SERVICE_USER), tmp)
    workspace = "f" + uuid.uuid4().hex[:10]
    conn = await connect(settings, name="cairn-fault-checker")
    try:
        async with stack.services(settings):
            load = Workload(
                cluster.settings(), workspace, seed=seed, lake=tmp / "lake", duration_s=WORKLOAD_S
            )
            await load.prepare()
            async with stack.agent(cluster.settings(user=AGENT_USER), workspace, tmp):
                history, what = await asyncio.gather(load.run(), fault(cluster, load.history))
                await cluster.wait_ready(60)
                left = await wait_for_jobs(conn, workspace, history, 60)
            report = await check(conn, workspace, history)
            account = describe(history, load.errors)
            print(f"seed {seed}: {what}; {account}\n{report}")
            assert report.ok, f"seed {seed}, {what}:\n{report}\n{account}\njobs left: {left}"
            return history, load.errors
    finally:
        await conn.close()


def _seed(round_: int) -> int:
    return SEED + round_


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
@ROUNDS
async def test_the_events_leader_killed_mid_burst(
    cluster: NatsCluster, tmp_path: Path, round_: int, nats_py_leaks: None
) -> None:
    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        leader = await cluster.stream_leader("EVENTS")
        leader.kill()
        await asyncio.sleep(DOWN_S)
        await leader.start()
        return f"killed EVENTS leader {leader.name} at {len(history.acked)} acks"

    await _scenario(cluster, tmp_path, _seed(round_), fault)


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
@ROUNDS
async def test_a_follower_killed_and_back(
    cluster: NatsCluster, tmp_path: Path, round_: int, nats_py_leaks: None
) -> None:
    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        leader = await cluster.stream_leader("EVENTS")
        follower = next(n for n in cluster.nodes if n is not leader)
        follower.kill()
        await asyncio.sleep(DOWN_S)
        await follower.start()
        return f"killed follower {follower.name} (leader {leader.name})"

    await _scenario(cluster, tmp_path, _seed(round_), fault)


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
@ROUNDS
async def test_the_events_leader_paused_past_the_election_timeout(
    cluster: NatsCluster, tmp_path: Path, round_: int, nats_py_leaks: None
) -> None:
    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        leader = await cluster.stream_leader("EVENTS")
        leader.pause()
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            leader.resume()
        return f"paused EVENTS leader {leader.name} for {PAUSE_S:g}s"

    await _scenario(cluster, tmp_path, _seed(round_), fault)


@LEAKS_SOCKETS
@pytest.mark.timeout(300)
@ROUNDS
async def test_a_rolling_restart_under_load(
    cluster: NatsCluster, tmp_path: Path, round_: int, nats_py_leaks: None
) -> None:
    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        for node in cluster.nodes:
            await node.restart()
            await cluster.wait_ready(60)
        return "restarted n1, n2, n3 in turn"

    await _scenario(cluster, tmp_path, _seed(round_), fault)


@pytest.fixture
async def cluster_in_namespaces(tmp_path: Path) -> AsyncIterator[tuple[NatsCluster, Namespaces]]:
    """Three nodes, each in a network namespace of its own (skipped, with the reason, where
    namespaces cannot be made)."""
    why = unavailable()
    if why is not None:
        print(f"partition test skipped: {why}")
        pytest.skip(why)
    spaces = Namespaces(3)
    spaces.create()
    nodes = NatsCluster(tmp_path / "cluster", nodes=3, hosts=spaces.hosts)
    for i, node in enumerate(nodes.nodes):
        node.launcher = spaces.launcher(i)
        node.monitor_host = node.host
    try:
        await nodes.start()
        yield nodes, spaces
    finally:
        nodes.kill()
        spaces.destroy()


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
@ROUNDS
async def test_the_events_leader_partitioned_from_its_peers(
    cluster_in_namespaces: tuple[NatsCluster, Namespaces],
    tmp_path: Path,
    round_: int,
    nats_py_leaks: None,
) -> None:
    cluster, spaces = cluster_in_namespaces

    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        leader = await cluster.stream_leader("EVENTS")
        index = cluster.nodes.index(leader)
        spaces.cut(index)
        try:
            await asyncio.sleep(PARTITION_S)
        finally:
            spaces.heal(index)
        return f"cut EVENTS leader {leader.name} off its peers for {PARTITION_S:g}s"

    await _scenario(cluster, tmp_path, _seed(round_), fault)


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
@ROUNDS
async def test_the_events_leader_black_holed(
    cluster_in_namespaces: tuple[NatsCluster, Namespaces],
    tmp_path: Path,
    round_: int,
    nats_py_leaks: None,
) -> None:
    """Every packet to and from the EVENTS leader is dropped, for longer than a client takes
    to find a silent connection dead. Beyond the checker's invariants, no client request
    hangs: each ends, answered or failed, within its own budget (the RPC client's attempts
    of ``request_timeout`` each, and their pauses)."""
    cluster, spaces = cluster_in_namespaces

    async def fault(cluster: NatsCluster, history: History) -> str:
        await _mid_burst(history)
        leader = await cluster.stream_leader("EVENTS")
        index = cluster.nodes.index(leader)
        spaces.black_hole(index)
        try:
            await asyncio.sleep(BLACK_HOLE_S)
        finally:
            spaces.heal(index)
        return f"black-holed EVENTS leader {leader.name} for {BLACK_HOLE_S:g}s"

    assert BLACK_HOLE_S > PING_INTERVAL_S * 3
    history, errors = await _scenario(cluster, tmp_path, _seed(round_), fault)
    timeout = cluster.settings().request_timeout
    # Client._request: 3 attempts, each up to max(request_timeout, wait_s + 2) then a pause
    # of 0.2 s x its number; the slack is for a loaded machine's event loop, not the network
    budget = 3 * max(timeout, Query().wait_s + 2) + 1.2 + 10
    slow = [c for c in history.calls if c.seconds > budget]
    assert history.calls and not slow, f"requests past their budget of {budget:g} s: {slow}"
    longest = max(c.seconds for c in history.calls)
    print(f"{len(history.calls)} requests, the longest {longest:.1f} s; errors: {errors[:5]}")
