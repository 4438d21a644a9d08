"""Mirror copies are bounded: beyond ``gateway_mirror_max_inflight`` copies on their way, a
copy is dropped and counted, so a mirrored deployment that does not answer cannot pile up
tasks in the gateway."""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from cairn.bus import Connection
from cairn.services.gateway._score import TIMEOUT_HEADER, Scorer
from cairn.settings import Settings


def _dropped() -> float:
    return REGISTRY.get_sample_value("cairn_gateway_mirror_dropped_total") or 0.0


async def test_mirror_copies_beyond_the_cap_are_dropped_and_counted(
    client_settings: Settings, agent_conn: Connection
) -> None:
    settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_mirror_max_inflight=2
    )
    subject = "cairn.serve.mirror-cap.ep.green"
    arrived: list[Msg] = []
    two = asyncio.Event()

    async def never_answers(msg: Msg) -> None:  # a mirrored deployment that is stuck
        arrived.append(msg)
        if len(arrived) == 2:
            two.set()

    sub = await agent_conn.nc.subscribe(subject, queue="replicas", cb=never_answers)
    await agent_conn.nc.flush()
    scorer = Scorer(settings)
    before = _dropped()
    try:
        for _ in range(5):
            scorer.mirror({"green": 100}, lambda _: subject, b"{}", 60.0)
        assert scorer.mirrors_dropped == 3
        assert _dropped() == before + 3
        await asyncio.wait_for(two.wait(), 30)
        # each copy says how long the gateway waits for it
        assert all(m.headers and m.headers[TIMEOUT_HEADER] == "60000" for m in arrived)
        # one more while the two are on their way: dropped too
        scorer.mirror({"green": 100}, lambda _: subject, b"{}", 60.0)
        assert scorer.mirrors_dropped == 4
    finally:
        await scorer.close()
        await sub.unsubscribe()
    assert len(arrived) == 2
