"""A NATS JetStream cluster of real nats-server processes per test (``cairn.embedded.NatsCluster``):
free ports for every node, every process killed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.embedded import NatsCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three nodes, started and ready (every node up, a JetStream meta leader elected)."""
    nodes = NatsCluster(tmp_path / "cluster", nodes=3)
    try:
        await nodes.start()
        yield nodes
    finally:
        nodes.kill()
