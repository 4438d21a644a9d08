"""A command unanswered after the client's first, short wait is sent again, and the first
answer to any attempt is taken: a service slower than that wait (under load) is answered
through the first attempt, and the resend is a replay of the same command, applied once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from cairn.bus import AggregateCache, EventStore, execute
from cairn.domain import workspace
from cairn.proto import subjects
from cairn.proto.commands import Accepted, CreateWorkspace
from cairn.rpc import Client, Request, Responder
from tests.conftest import own_server


async def test_an_answer_after_the_first_wait_is_taken_and_the_command_applied_once(
    tmp_path: Path,
) -> None:
    # request_timeout 4 s: the first attempt waits 2 s, then the command is sent again
    server, _settings, conn = await own_server(tmp_path / "home", request_timeout=4.0)
    cache = AggregateCache(EventStore(conn))
    calls = 0
    resent = asyncio.Event()  # the second attempt reached the service
    release = asyncio.Event()  # the test lets the second attempt be served
    second: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()

    async def slow(req: Request) -> Accepted:
        nonlocal calls
        calls += 1
        if calls == 1:
            # a slow service: the first attempt is answered only after the client sent the
            # command again (so after the first attempt's own wait ran out)
            await asyncio.wait_for(resent.wait(), 60)
            return await execute(req.context(), workspace.AGGREGATE, ws, req.body, cache=cache)
        resent.set()
        await asyncio.wait_for(release.wait(), 60)
        accepted = await execute(req.context(), workspace.AGGREGATE, ws, req.body, cache=cache)
        second.set_result(accepted)
        return accepted

    responder = Responder(
        conn,
        subjects=[subjects.command_filter("workspace")],
        queue="resend-test",
        types=(CreateWorkspace,),
        routes={CreateWorkspace.VERB: slow},
    )
    ws = "t" + uuid.uuid4().hex[:12]
    cmd = CreateWorkspace(command_id=uuid.uuid4().hex, name=ws)
    try:
        await responder.start()
        await conn.nc.flush()
        # the second attempt is held until the client has its answer: only the first
        # attempt's answer, sent after that attempt's wait ran out, can reach it
        accepted = await Client(conn, ws).send(cmd)
        assert calls == 2
        assert not accepted.replayed and accepted.command_id == cmd.command_id
        release.set()
        replay = await asyncio.wait_for(second, 60)
        assert replay.replayed and replay.seq == accepted.seq
        stored = await EventStore(conn).read(subjects.event(ws, workspace.AGGREGATE.kind, ws))
        assert [r.envelope.causation_id for r in stored] == [cmd.command_id]
    finally:
        release.set()
        resent.set()
        await responder.stop()
        await conn.close()
        server.stop()
