"""The gateway asks another replica only when the replica's agent says that nothing ran
(``Cairn-Unrun: 1``, on its own 429): a 429 without it is the caller's answer, asked once,
since ``run()`` may have had effects."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from nats.aio.msg import Msg

from cairn.bus import Connection
from cairn.services.agent._serving import STATUS_HEADER, UNRUN_HEADER
from cairn.services.gateway._score import Scorer
from cairn.settings import Settings


@pytest.mark.parametrize("unrun", [False, True], ids=["replica-429", "agent-429"])
async def test_only_an_answer_that_nothing_ran_is_asked_again(
    client_settings: Settings, agent_conn: Connection, unrun: bool
) -> None:
    subject = f"cairn.serve.unrun-{uuid.uuid4().hex[:8]}.ep.blue"
    asked: list[bytes] = []

    async def replica(msg: Msg) -> None:
        asked.append(msg.data)
        if len(asked) == 1:  # busy the first time
            headers = {STATUS_HEADER: "429"}
            if unrun:
                headers[UNRUN_HEADER] = "1"
            await agent_conn.nc.publish(msg.reply, b'{"error": "busy"}', headers=headers)
        else:
            await agent_conn.nc.publish(msg.reply, b'{"ok": 1}', headers={STATUS_HEADER: "200"})

    sub = await agent_conn.nc.subscribe(subject, queue="replicas", cb=replica)
    await agent_conn.nc.flush()
    settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_score_retry_s=30.0
    )
    scorer = Scorer(settings)
    try:
        status, body = await scorer.forward(subject, b"{}", timeout=20.0)
    finally:
        await scorer.close()
        await sub.unsubscribe()
    if unrun:
        assert (status, body, len(asked)) == (200, b'{"ok": 1}', 2)
    else:
        assert (status, body, len(asked)) == (429, b'{"error": "busy"}', 1)
