"""A replica's process and its agent's side of ``serve.sock``, without a scheduler: several
``run()`` calls at once, a bounded queue (429 beyond it, 503 past its wait), requests whose
caller gave up dropped, only the launched replica let in, and the ``ready`` report sent
again until it is acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from cairn.errors import CairnError, NotFound
from cairn.proto.commands import Accepted, ErrorReply
from cairn.proto.serving import ReportReplica
from cairn.rpc import Client
from cairn.services.agent._runner import _passing
from cairn.services.agent._serving import (
    TIMEOUT_HEADER,
    ReplicaChannel,
    deadline_of,
    descends_from,
    until_acknowledged,
)
from cairn.serving import TOKEN_ENV, WORKERS_ENV, ServeHello, ServeRequest, encode
from cairn.serving._replica import _answer
from tests.conftest import own_server

#: ``{"wait": name}`` blocks until file ``name`` exists beside the script; every call is
#: recorded in ``calls.txt``
SCORE = """
import json, os, time

HERE = os.path.dirname(os.path.abspath(__file__))


def init():
    pass


def run(raw):
    data = json.loads(raw)
    with open(os.path.join(HERE, "calls.txt"), "a") as f:
        f.write(json.dumps(data) + "\\n")
    if "wait" in data:
        while not os.path.exists(os.path.join(HERE, data["wait"])):
            time.sleep(0.01)
    if "big" in data:
        return {"x": "a" * data["big"]}
    return {"echo": data}
"""


class Replica:
    def __init__(self, folder: Path, channel: ReplicaChannel, proc: asyncio.subprocess.Process):
        self.folder, self.channel, self.proc = folder, channel, proc

    def release(self, name: str) -> None:
        (self.folder / name).write_text("")

    def calls(self) -> list[dict[str, object]]:
        path = self.folder / "calls.txt"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def ask(self, body: object, deadline: float | None = None) -> tuple[int, object]:
        status, answer = await self.channel.request(json.dumps(body).encode(), 60.0, deadline)
        return status, json.loads(answer)


def _script(folder: Path, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(script)


async def _replica(
    folder: Path, *, workers: int, queue_wait: float, script: str = SCORE
) -> AsyncIterator[Replica]:
    _script(folder, script)
    channel = ReplicaChannel(folder, workers=workers, queue_wait=queue_wait)
    await channel.open()
    env = {
        **os.environ,
        "CAIRN_AGENT_SOCKET": str(folder / "agent.sock"),  # serve.sock is beside it
        WORKERS_ENV: str(workers),
        TOKEN_ENV: channel.token,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cairn.serving",
        str(folder / "score.py"),
        env=env,
        cwd=folder,
        start_new_session=True,
    )
    channel.admit(proc.pid, proc.pid)  # it leads its own session
    try:
        await asyncio.wait_for(channel.ready.wait(), 60)
        yield Replica(folder, channel, proc)
    finally:
        await channel.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[Replica]:
    async for replica in _replica(tmp_path / "r", workers=2, queue_wait=60.0):
        yield replica


async def test_a_slow_request_does_not_hold_up_the_next(two_workers: Replica) -> None:
    slow = asyncio.create_task(two_workers.ask({"wait": "go"}))
    while not two_workers.calls():  # the slow one is in run()
        await asyncio.sleep(0.01)
    assert await two_workers.ask({"n": 1}) == (200, {"echo": {"n": 1}})
    assert not slow.done()
    two_workers.release("go")
    assert await asyncio.wait_for(slow, 60) == (200, {"echo": {"wait": "go"}})


async def test_as_many_wait_as_run_and_beyond_them_the_replica_is_busy(
    two_workers: Replica,
) -> None:
    running = [asyncio.create_task(two_workers.ask({"wait": "go", "i": i})) for i in range(2)]
    while len(two_workers.calls()) < 2:
        await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(two_workers.ask({"i": i})) for i in (2, 3)]
    await asyncio.sleep(0)  # the two are admitted and wait for a worker
    status, answer = await two_workers.ask({"i": 4})
    assert status == 429 and "busy" in str(answer)
    two_workers.release("go")
    done = await asyncio.wait_for(asyncio.gather(*running, *waiting), 60)
    assert [status for status, _ in done] == [200] * 4
    assert {c.get("i") for c in two_workers.calls()} == {0, 1, 2, 3}  # not the refused one


async def test_a_request_past_the_queue_wait_is_503(tmp_path: Path) -> None:
    async for replica in _replica(tmp_path / "r", workers=1, queue_wait=0.0):
        held = asyncio.create_task(replica.ask({"wait": "go"}))
        while not replica.calls():
            await asyncio.sleep(0.01)
        status, answer = await replica.ask({"late": True})
        assert status == 503 and "free" in str(answer)
        replica.release("go")
        assert (await asyncio.wait_for(held, 60))[0] == 200
        assert {"late": True} not in replica.calls()


async def test_a_request_whose_caller_gave_up_is_not_computed(two_workers: Replica) -> None:
    status, _ = await two_workers.ask({"gone": True}, deadline=time.monotonic() - 0.001)
    assert status == 504
    assert await two_workers.ask({"here": True}) == (200, {"echo": {"here": True}})
    assert {"gone": True} not in two_workers.calls()
    # the gateway's header says how long it still waits
    assert deadline_of({TIMEOUT_HEADER: "2000"}) is not None
    assert deadline_of({TIMEOUT_HEADER: "soon"}) is None and deadline_of(None) is None


async def test_an_answer_of_several_mib_comes_back_whole(two_workers: Replica) -> None:
    status, answer = await two_workers.ask({"big": 3 * 1024 * 1024})
    assert status == 200 and isinstance(answer, dict) and len(answer["x"]) == 3 * 1024 * 1024


def test_a_run_that_exits_is_answered_500() -> None:
    """``SystemExit`` from ``run()`` is answered as any error (nothing is left unanswered)."""
    module = types.ModuleType("score")

    def run(raw: str) -> None:
        raise SystemExit(2)

    module.__dict__["run"] = run
    answer = _answer(module, ServeRequest(id=1, body=b"{}"))
    assert answer.status == 500 and "SystemExit" in json.loads(answer.body)["error"]


def test_an_answer_over_the_limit_is_refused_naming_it() -> None:
    module = types.ModuleType("score")
    module.__dict__["run"] = lambda raw: "a" * 2048
    answer = _answer(module, ServeRequest(id=1, body=b"{}"), limit=1024)
    assert answer.status == 500
    assert "2050 bytes, over the limit of 1024 bytes" in json.loads(answer.body)["error"]


def _connect_and_hello(path: Path, pid: int, token: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall(encode(ServeHello(pid=pid, token=token)))
    return sock


async def _closed_by_agent(sock: socket.socket) -> bool:
    sock.settimeout(30)
    return await asyncio.to_thread(sock.recv, 1) == b""


@pytest.mark.parametrize(
    "case",
    [
        "before_launch",
        "another_session",
        "not_the_launched_process",
        "wrong_token",
        "container_not_the_launched_process",
    ],
)
async def test_only_the_launched_replica_is_let_in(tmp_path: Path, case: str) -> None:
    """A process that reaches ``serve.sock`` before the replica is launched, from another
    session, that is not the launched process nor one of its descendants (a process in the
    same session, or, for a container, any process this agent sees outside the container),
    or without the launch's token, is dropped and the replica is not ready. The peer's pid
    is the kernel's (``SO_PEERCRED``), whatever its hello says."""
    channel = ReplicaChannel(tmp_path)
    await channel.open()
    # another process of this test's session: what the replica would be, launched
    launched = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(120)"
    )
    try:
        own = os.getsid(0)
        token = "0" * 32 if case == "wrong_token" else channel.token
        # the hello names the launched process: a claim, which proves nothing
        sock = await asyncio.to_thread(_connect_and_hello, channel.path, launched.pid, token)
        try:
            if case == "before_launch":
                await asyncio.sleep(0.05)  # nothing is admitted while nothing is launched
                assert not channel.ready.is_set()
                channel.admit(own + 1_000_000, launched.pid)  # the replica's session
            elif case == "another_session":
                channel.admit(own + 1_000_000, os.getpid())
            elif case == "not_the_launched_process":
                channel.admit(own, launched.pid)
            elif case == "wrong_token":
                channel.admit(own, os.getpid())
            else:
                channel.admit(None, launched.pid)
            assert await _closed_by_agent(sock)
            assert not channel.ready.is_set()
        finally:
            sock.close()
    finally:
        launched.kill()
        await launched.wait()
        await channel.close()


@pytest.mark.parametrize("session", [True, False], ids=["process", "container"])
async def test_the_launched_process_with_its_token_is_let_in(tmp_path: Path, session: bool) -> None:
    """The same connection is let in when it is the launched process (or descends from it)
    with the launch's token: the refusals above are the checks', not the socket's."""
    channel = ReplicaChannel(tmp_path)
    await channel.open()
    try:
        sock = await asyncio.to_thread(_connect_and_hello, channel.path, 1, channel.token)
        try:
            channel.admit(os.getsid(0) if session else None, os.getpid())
            await asyncio.wait_for(channel.ready.wait(), 30)
        finally:
            sock.close()
    finally:
        await channel.close()


def test_a_process_descends_from_its_parents_only() -> None:
    assert descends_from(os.getpid(), os.getpid())
    assert descends_from(os.getpid(), os.getppid())
    assert not descends_from(os.getppid(), os.getpid())
    assert not descends_from(os.getpid(), 2**22 + 1)


async def test_a_lost_ready_report_is_sent_again_until_acknowledged(tmp_path: Path) -> None:
    """The scheduler away at first (no responder), then a report lost (asked, never
    answered), then acknowledged: the same command each time; a refusal for good stops."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=0.5)
    try:
        client = Client(conn, "ws", attempts=1, timeout=0.5)
        cmd = ReportReplica(
            command_id="c" * 32,
            endpoint="ep",
            deployment="blue",
            run_id="r" * 32,
            attempt=1,
            phase="ready",
        )
        away = asyncio.Event()
        stop = asyncio.Event()

        def passing(exc: CairnError) -> bool:
            away.set()
            return _passing(exc)

        sending = asyncio.create_task(
            until_acknowledged(
                lambda: client.send(cmd), stop=stop, passing=passing, first_s=0.05, most_s=0.2
            )
        )
        await asyncio.wait_for(away.wait(), 30)
        seen: list[str] = []

        async def scheduler(msg: Msg) -> None:
            body = msgspec.json.decode(msg.data)
            seen.append(body["command_id"])
            if len(seen) == 1:
                return  # lost: the agent's request times out
            reply = Accepted(command_id=body["command_id"], aggregate_id="ep_blue", seq=1)
            await msg.respond(msgspec.json.encode(reply))

        sub = await conn.nc.subscribe("cairn.cmd.ws.replica.report", cb=scheduler)
        assert await asyncio.wait_for(sending, 60) is True
        assert len(seen) >= 2 and set(seen) == {cmd.command_id}
        await sub.unsubscribe()

        async def refusing(msg: Msg) -> None:
            reply = ErrorReply(code=NotFound.code, message="no deployment blue")
            await msg.respond(msgspec.json.encode(reply))

        sub = await conn.nc.subscribe("cairn.cmd.ws.replica.report", cb=refusing)
        assert (
            await until_acknowledged(lambda: client.send(cmd), stop=stop, passing=_passing) is False
        )
        await sub.unsubscribe()
    finally:
        await conn.close()
        server.stop()


#: a replica whose own code answers 429 after run() ran (it patches the frames it sends)
BUSY_AFTER_RUN = (
    SCORE
    + """
import sys

_replica = sys.modules["cairn.serving._replica"]
_real = _replica._answer


def _busy(module, request, *args, **kwargs):
    answered = _real(module, request, *args, **kwargs)  # run() ran: its effects are done
    return type(answered)(id=answered.id, status=429, body=answered.body)


_replica._answer = _busy
"""
)


async def test_a_status_a_replica_may_not_give_is_502(tmp_path: Path) -> None:
    """A 429 says "nothing ran", which only the agent knows: a replica's own 429 (after its
    run() ran) is 502, so nothing asks another replica to run it again."""
    async for replica in _replica(tmp_path / "r", workers=1, queue_wait=1.0, script=BUSY_AFTER_RUN):
        status, answer = await replica.ask({"n": 1})
        assert status == 502 and "status 429" in str(answer)
        assert replica.calls() == [{"n": 1}]


async def test_a_run_past_its_time_fails_itself_alone(two_workers: Replica) -> None:
    """One run() past its time is 504; the request beside it in the replica's hands is
    answered when it ends (not 503), and from then on the replica takes nothing new (429,
    nothing ran) until its agent restarts it."""
    channel = two_workers.channel
    beside = asyncio.create_task(two_workers.ask({"wait": "go"}))
    while not two_workers.calls():
        await asyncio.sleep(0.01)
    stuck = await channel.request(json.dumps({"wait": "never"}).encode(), 0.5)
    assert stuck[0] == 504 and b"longer than 0.5 s" in stuck[1]
    assert channel.stopping.is_set() and channel.over.is_set()
    assert not channel.closed.is_set() and not beside.done()
    status, answer = await two_workers.ask({"late": True})
    assert status == 429 and "restarting" in str(answer)
    two_workers.release("go")
    assert await asyncio.wait_for(beside, 60) == (200, {"echo": {"wait": "go"}})
    assert {"late": True} not in two_workers.calls()


async def test_a_request_waiting_for_a_worker_is_refused_unrun_when_a_run_overruns(
    tmp_path: Path,
) -> None:
    """One worker, held by a run() that overruns, and one request waiting for it: the worker
    is never freed, so the waiting request is refused at once (429, nothing ran: the gateway
    asks another replica), not held for the queue's wait and then answered 503."""
    async for replica in _replica(tmp_path / "r", workers=1, queue_wait=600.0):
        channel = replica.channel
        stuck = asyncio.create_task(channel.request(json.dumps({"wait": "never"}).encode(), 5.0))
        while not replica.calls():  # it is in run()
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(replica.ask({"waiting": True}))
        while channel._admitted < 2:  # it waits for the worker
            await asyncio.sleep(0)
        assert not channel.stopping.is_set(), "the premise: it waited before the overrun"
        status, _ = await asyncio.wait_for(stuck, 60)
        assert status == 504
        status, answer = await asyncio.wait_for(waiting, 60)
        assert status == 429 and "restarting" in str(answer)
        assert {"waiting": True} not in replica.calls()
