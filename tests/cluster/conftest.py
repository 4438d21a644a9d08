"""NATS JetStream clusters of real nats-server processes (``cairn.embedded.NatsCluster``): free
ports for every node, every process killed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cairn.embedded import NatsCluster

MakeCluster = Callable[..., Awaitable[NatsCluster]]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """Start a cluster: ``await make_cluster(nodes=5)`` (any ``NatsCluster`` argument), ready
    (every node up, a JetStream meta leader elected); each is killed at teardown."""
    made: list[NatsCluster] = []

    async def make(**options: Any) -> NatsCluster:
        nodes = NatsCluster(tmp_path / f"cluster{len(made)}", **options)
        made.append(nodes)
        await nodes.start()
        return nodes

    try:
        yield make
    finally:
        for nodes in made:
            nodes.kill()


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> NatsCluster:
    """Three nodes, started and ready."""
    return await make_cluster(nodes=3)
