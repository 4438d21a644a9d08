"""Online deployments over time, end to end (a real scheduler, agents running replicas, the
gateway): a replica's re-queue back-off starts over once it served for a stable period, a
rolling update whose new replicas cannot start is rolled back while the old ones serve, and
an autoscaled deployment follows its load up and down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import joblib
import msgspec
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, EventStore, connect, execute
from cairn.cli._online import _endpoint_row
from cairn.domain import endpoint as endpoints
from cairn.domain import run as runs
from cairn.proto import subjects
from cairn.proto.commands import CancelRun
from cairn.proto.events import (
    DeploymentRolledBack,
    DeploymentScaled,
    ReplicaReplaced,
    RunCanceled,
    RunRequeued,
    RunSubmitted,
    decode_envelope,
)
from cairn.proto.jobs import SubmitJob, derived_id
from cairn.proto.serving import (
    DeploymentSpec,
    DeployModel,
    ReportReplica,
    ScaleSettings,
    deployment_id,
)
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import running
from cairn.services.scheduler._autoscale import Autoscaler, Decision
from cairn.settings import Settings
from tests.conftest import JOB_SETTINGS, Agents

#: a replica that fails to start when it is the run named by FAIL_RUN; answers with VERSION
SCORE = """
import json
import os
import time

NAME = os.environ.get("VERSION", "v1")


def init():
    if os.environ.get("FAIL_RUN") == os.environ["CAIRN_RUN_ID"]:
        raise RuntimeError("this replica refuses to start on purpose")


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("sleep"):
        time.sleep(data["sleep"])
    return {"pid": os.getpid(), "name": NAME}
"""


STABLE_S = float(str(JOB_SETTINGS["replica_stable_s"]))


@pytest.fixture
async def scoring(
    services: None, client_settings: Settings, client: Client
) -> AsyncIterator[AsyncWorkspace]:
    """The test's workspace, scored through a gateway of the test's own."""
    gw_settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_port=0
    )
    async with running(gw_settings) as gw:
        settings = msgspec.structs.replace(client_settings, gateway_url=gw.url)
        conn = await connect(settings)
        ws = AsyncWorkspace(conn, client.workspace, settings)
        try:
            yield ws
        finally:
            await ws.close()
            await conn.close()


Deploy = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def deploy(tmp_path: Path) -> Deploy:
    """``await deploy(ws, endpoint, deployment, **spec)``: the endpoint made and the
    deployment of SCORE (no model) deployed to it; the endpoint's keys."""

    async def make(
        ws: AsyncWorkspace, endpoint: str, deployment: str, **spec: Any
    ) -> dict[str, str]:
        keys = await ws.endpoints.create(endpoint)
        await ws.endpoints.deploy(
            endpoint,
            deployment,
            entry_script="score.py",
            source_directory=_source(tmp_path / f"src-{endpoint}-{deployment}"),
            models=[],
            **spec,
        )
        return keys

    return make


def _source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(SCORE)
    model = LogisticRegression().fit(np.eye(2), [0, 1])
    joblib.dump(model, folder / "model.pkl")
    return folder


async def _post(http: httpx.AsyncClient, url: str, key: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return await http.post(url, content=json.dumps(body), headers=headers, timeout=120)


class Asking:
    """Clients that keep scoring, each recording (status, name) of every answer."""

    def __init__(self, url: str, key: str, clients: int, body: dict[str, Any]) -> None:
        self.answers: list[tuple[int, str]] = []
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._ask(url, key, body)) for _ in range(clients)]

    async def _ask(self, url: str, key: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient() as http:
            while not self.stop.is_set():
                reply = await _post(http, url, key, body)
                name = reply.json().get("name", reply.text) if reply.status_code == 200 else ""
                self.answers.append((reply.status_code, name or reply.text))

    async def until(self, count: int, name: str | None = None, timeout: float = 120) -> None:
        """Until ``count`` more answers came (from ``name``, when given, in a row)."""
        deadline = time.monotonic() + timeout
        seen = len(self.answers)
        while time.monotonic() < deadline:
            recent = self.answers[seen:]
            if name is not None:
                tail = 0
                for _, got in reversed(recent):
                    if got != name:
                        break
                    tail += 1
                if tail >= count:
                    return
            elif len(recent) >= count:
                return
            if any(t.done() for t in self.tasks):
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {count} answers{f' from {name}' if name else ''}: {recent[-5:]}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 120)  # raises what they raised


async def _events(
    conn: Connection, ws: str, kind: str, aggregate_id: str
) -> tuple[asyncio.Queue[Any], Any]:
    """A queue of the aggregate's events as they are appended."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def on(msg: Any) -> None:
        queue.put_nowait(decode_envelope(msg.data).data)

    sub = await conn.nc.subscribe(subjects.event(ws, kind, aggregate_id), cb=on)
    return queue, sub


async def _next(queue: asyncio.Queue[Any], kind: type[Any], timeout: float = 180) -> Any:
    async def find() -> Any:
        while True:
            event = await queue.get()
            if isinstance(event, kind):
                return event

    return await asyncio.wait_for(find(), timeout)


@pytest.mark.timeout(400)
async def test_a_replica_that_served_a_stable_period_is_replaced_at_once(
    scoring: AsyncWorkspace, agents: Agents, deploy: Deploy, conn: Connection
) -> None:
    """Two losses in a row back the replica off; once its next attempt has been ready for
    ``replica_stable_s``, a single loss is re-queued without delay (the back-off starts over)
    instead of after the third step of the back-off."""
    ws = scoring
    await agents.start()
    keys = await deploy(ws, "stable", "blue", all_traffic=True)
    assert (await ws.endpoints.wait("stable", "blue", timeout=120))["status"] == "Succeeded"
    run_id = (await ws.endpoints.deployment("stable", "blue"))["replicas"][0]
    requeued, sub = await _events(conn, ws.name, "run", run_id)
    url = ws.endpoints.scoring_uri("stable")
    try:
        async with httpx.AsyncClient() as http:

            async def serving_pid(other_than: int | None) -> int:
                for _ in range(600):  # the gateway retries while no replica listens
                    reply = await _post(http, url, keys["primary"], {})
                    if reply.status_code == 200 and reply.json()["pid"] != other_than:
                        return int(reply.json()["pid"])
                    await asyncio.sleep(0.2)
                raise AssertionError(f"no new replica answered: {reply.status_code}")

            pid = await serving_pid(None)
            for _ in range(2):  # lost twice, as soon as it serves: the back-off grows
                os.kill(pid, signal.SIGKILL)
                await _next(requeued, RunRequeued)
                pid = await serving_pid(pid)
            await asyncio.sleep(STABLE_S + 1)  # the time that makes it stable passes
            os.kill(pid, signal.SIGKILL)
            third = await _next(requeued, RunRequeued)
            assert third.backoff_reset and third.delay_s == 0.0, third
            await serving_pid(pid)  # and it is back
    finally:
        await sub.unsubscribe()


@pytest.mark.timeout(400)
async def test_a_new_spec_whose_replica_cannot_start_is_rolled_back(
    scoring: AsyncWorkspace, agents: Agents, deploy: Deploy, client: Client
) -> None:
    """One replica of the new spec starts, the other's init() raises: the roll stops, the
    previous spec serves again (every answer meanwhile a 200), and the deployment shows the
    update Failed with its reason."""
    ws = scoring
    await agents.start(slots=6)
    keys = await deploy(ws, "roll", "blue", replicas=2, all_traffic=True)
    first = await ws.endpoints.wait("roll", "blue", timeout=120)
    assert first["status"] == "Succeeded", first
    asking = Asking(ws.endpoints.scoring_uri("roll"), keys["primary"], 2, {})
    try:
        await asking.until(5, "v1")
        # v2: the same code, but its second replica refuses to start
        command_id = "update-" + os.urandom(8).hex()
        bad = derived_id("replica", command_id, 1)
        spec = msgspec.structs.replace(
            msgspec.convert(first["spec"], DeploymentSpec),
            env_vars={"VERSION": "v2", "FAIL_RUN": bad},
        )
        await client.send(
            DeployModel(command_id=command_id, endpoint="roll", deployment="blue", spec=spec)
        )
        row = await ws.endpoints.wait("roll", "blue", timeout=180)
        assert row["status"] == "Failed", row
        assert "refuses to start on purpose" in row["update_error"], row
        assert row["spec"]["env_vars"] == {}, row["spec"]  # the previous spec, again
        assert bad in row["retired"] and not set(row["replicas"]) & set(row["retired"][-2:])
        shown = _endpoint_row(await ws.endpoints.get("roll"))["deployments"]["blue"]
        assert shown["update"].startswith("Failed, rolled back"), shown
        await asking.until(20, "v1", timeout=180)  # the previous replicas answer everything
    finally:
        await asking.close()
    assert {status for status, _ in asking.answers} == {200}, asking.answers[-5:]


@pytest.mark.timeout(600)  # a window, a cooldown and a replica's start per step
async def test_an_autoscaled_deployment_follows_its_load(
    scoring: AsyncWorkspace, agents: Agents, deploy: Deploy, conn: Connection
) -> None:
    """min 1, max 3: under sustained concurrent load it scales up to 3, each decision an
    event with the numbers compared; idle, it scales back to 1."""
    ws = scoring
    await agents.start(slots=4)
    scaled, sub = await _events(conn, ws.name, "deployment", deployment_id("load", "auto"))
    try:
        keys = await deploy(
            ws,
            "load",
            "auto",
            all_traffic=True,
            scale=ScaleSettings(min_replicas=1, max_replicas=3, polling_interval_s=1.0),
            # room for the five clients in one replica (three at once, three waiting): no
            # 429 while it scales; the utilisation is over the three a replica runs at once
            max_concurrent_requests=3,
        )
        assert (await ws.endpoints.wait("load", "auto", timeout=120))["status"] == "Succeeded"
        asking = Asking(ws.endpoints.scoring_uri("load"), keys["primary"], 5, {"sleep": 0.2})
        try:
            ups: list[DeploymentScaled] = []
            while not ups or ups[-1].replicas_after < 3:
                ups.append(await _next(scaled, DeploymentScaled, timeout=240))
                up = ups[-1]
                assert up.replicas_after > up.replicas_before, ups
                assert up.utilization_pct > up.target_pct == 70.0 and up.requests > 0, up
        finally:
            await asking.close()
        assert {status for status, _ in asking.answers} == {200}, asking.answers[-5:]
        row = await ws.endpoints.deployment("load", "auto")
        assert len(row["replicas"]) == 3 and row["load"], row
        downs: list[DeploymentScaled] = []  # idle now: back to the minimum
        while not downs or downs[-1].replicas_after > 1:
            downs.append(await _next(scaled, DeploymentScaled, timeout=240))
            down = downs[-1]
            assert down.replicas_after < down.replicas_before, downs
            assert down.utilization_pct < down.target_pct and down.removed, down
        row = await ws.endpoints.deployment("load", "auto")
        assert len(row["replicas"]) == 1 and row["scalings"] == len(ups) + len(downs), row
    finally:
        await sub.unsubscribe()


async def _decide(
    store: EventStore, ws: str, did: str, command_id: str, command: endpoints.DeploymentCommand
) -> None:
    """A decision appended as the scheduler would, and nothing done after it (a scheduler
    stopped between the event and its submits or stops)."""
    ctx = CommandContext(workspace=ws, command_id=command_id, actor="cairn-scheduler")
    await execute(ctx, endpoints.DEPLOYMENT, did, command, cache=AggregateCache(store))


async def _ready(store: EventStore, ws: str, endpoint: str, deployment: str, run_id: str) -> None:
    """The replica's ready report, as its agent would send it (no agent runs it)."""
    report = ReportReplica(
        command_id=f"ready-{run_id}",
        endpoint=endpoint,
        deployment=deployment,
        run_id=run_id,
        attempt=1,
        phase="ready",
    )
    did = deployment_id(endpoint, deployment)
    await _decide(store, ws, did, report.command_id, report)


@pytest.mark.timeout(300)
async def test_what_a_scale_event_leaves_undone_is_done_by_the_reconcile_pass(
    ws: AsyncWorkspace, deploy: Deploy, conn: Connection, store: EventStore, client: Client
) -> None:
    """``DeploymentScaled`` appended, then the scheduler gone before it submits the new
    replica or stops the removed one: the reconcile pass, from the deployment's state,
    submits the replica it names and never was submitted, and stops the one it removed."""
    wsn, did = client.workspace, deployment_id("ep", "auto")
    await deploy(
        ws,
        "ep",
        "auto",
        replicas=2,
        scale=ScaleSettings(
            min_replicas=1, max_replicas=3, polling_interval_s=600.0, cooldown_s=0.0
        ),
    )
    replicas = (await ws.endpoints.deployment("ep", "auto"))["replicas"]
    for run_id in replicas:  # no agent runs them
        await _ready(store, wsn, "ep", "auto", run_id)
    added = derived_id("scale", wsn, did, 0, 0)
    submitted, sub = await _events(conn, wsn, "run", added)
    try:
        out = endpoints.ScaleDeployment(
            at=time.time(),
            cooldown_s=0.0,
            replicas_before=2,
            replicas=3,
            utilization_pct=100.0,
            target_pct=70.0,
            window_s=10.0,
            requests=10,
            added=[added],
        )
        await _decide(store, wsn, did, f"out-{added}", out)
        await _next(submitted, RunSubmitted, timeout=120)
        row = await ws.endpoints.deployment("ep", "auto")
        assert row["replicas"] == [*replicas, added], row
        back = msgspec.structs.replace(
            out, at=time.time(), replicas_before=3, replicas=2, utilization_pct=10.0, added=[]
        )
        await _decide(store, wsn, did, f"in-{added}", back)
        await _next(submitted, RunCanceled, timeout=120)  # the removed replica is stopped
    finally:
        await sub.unsubscribe()
    # a replica run of the deployment that its state does not name (an earlier spec's, fallen
    # off the retired ids it keeps) is stopped too
    state = await lookup.state(AggregateCache(store), endpoints.DEPLOYMENT, wsn, did, fresh=True)
    assert state.job is not None and state.spec is not None
    stray = "stray" + os.urandom(8).hex()
    submit = SubmitJob(
        command_id=f"submit-{stray}",
        run_id=stray,
        experiment_name=state.experiment_name,
        compute=state.spec.compute,
        job=state.job,
    )
    resolved = runs.SubmitResolvedJob(
        command=submit, experiment_id=subjects.name_to_id(state.experiment_name), job=state.job
    )
    stopped, ssub = await _events(conn, wsn, "run", stray)
    try:
        ctx = CommandContext(workspace=wsn, command_id=submit.command_id, actor="cairn-scheduler")
        await execute(ctx, runs.AGGREGATE, stray, resolved, cache=AggregateCache(store), new=True)
        await _next(stopped, RunCanceled, timeout=120)
    finally:
        await ssub.unsubscribe()
    # a replica the deployment names is stopped (a roll stopping one that a roll-back kept):
    # it is replaced, after its back-off, and the deployment serves on
    successor = derived_id("replace", did, replicas[0])
    changes, dsub = await _events(conn, wsn, "deployment", did)
    started, rsub = await _events(conn, wsn, "run", successor)
    try:
        await client.send(
            CancelRun(command_id=f"stop-{replicas[0]}", run_id=replicas[0], reason="a race")
        )
        swap = await _next(changes, ReplicaReplaced, timeout=120)
        assert (swap.run_id, swap.replacement) == (replicas[0], successor), swap
        await _next(started, RunSubmitted, timeout=120)
        row = await ws.endpoints.deployment("ep", "auto")
        assert row["replicas"] == [successor, replicas[1]] and row["replacements"] == 1, row
        assert row["status"] == "Succeeded", row
    finally:
        await dsub.unsubscribe()
        await rsub.unsubscribe()


@pytest.mark.timeout(300)
async def test_two_schedulers_deciding_at_once_make_one_change(
    ws: AsyncWorkspace, deploy: Deploy, conn: Connection, store: EventStore, client: Client
) -> None:
    """Two autoscalers (two replicas of the scheduler) decide 1 -> 3 on the same view at the
    same time: one DeploymentScaled, the same two new replicas."""
    wsn, did = client.workspace, deployment_id("ep", "auto")
    scale = ScaleSettings(min_replicas=1, max_replicas=3, polling_interval_s=600.0)
    await deploy(ws, "ep", "auto", scale=scale)
    (first,) = (await ws.endpoints.deployment("ep", "auto"))["replicas"]
    await _ready(store, wsn, "ep", "auto", first)
    submitted: list[str] = []

    async def submit(ws: str, run_id: str, *_: Any) -> None:
        submitted.append(run_id)

    async def cancel(*_: Any) -> None:
        raise AssertionError("nothing is removed")

    scalers = [Autoscaler(conn, AggregateCache(store), submit, cancel) for _ in range(2)]
    try:
        state = await lookup.state(
            AggregateCache(store), endpoints.DEPLOYMENT, wsn, did, fresh=True
        )
        found = Decision(replicas=1, desired=3, utilization_pct=200.0, window_s=10.0, requests=9)
        now = time.time()
        await asyncio.gather(
            *(s._scale(wsn, did, state, found, now + i, 0.0) for i, s in enumerate(scalers))
        )
    finally:
        for scaler in scalers:
            await scaler.close()
    row = await ws.endpoints.deployment("ep", "auto")
    added = [derived_id("scale", wsn, did, 0, i) for i in range(2)]
    assert row["scalings"] == 1 and row["replicas"] == [first, *added], row
    assert sorted(set(submitted)) == sorted(added), submitted


@pytest.mark.timeout(300)
async def test_a_roll_with_no_new_replica_ready_by_its_deadline_is_rolled_back(
    ws: AsyncWorkspace, deploy: Deploy, conn: Connection, store: EventStore, client: Client
) -> None:
    """An update whose new replica never becomes ready (no agent takes it; as with a failed
    report lost for good) is rolled back once its ``rollout_timeout_s`` passed, with the
    reason; the previous spec's replica is the deployment's again."""
    wsn, did = client.workspace, deployment_id("ep", "blue")
    await deploy(ws, "ep", "blue")
    first = await ws.endpoints.deployment("ep", "blue")
    (old,) = first["replicas"]
    await _ready(store, wsn, "ep", "blue", old)
    changes, sub = await _events(conn, wsn, "deployment", did)
    try:
        spec = msgspec.structs.replace(
            msgspec.convert(first["spec"], DeploymentSpec),
            env_vars={"VERSION": "v2"},
            rollout_timeout_s=1.0,
        )
        await client.send(
            DeployModel(
                command_id="update-" + os.urandom(8).hex(),
                endpoint="ep",
                deployment="blue",
                spec=spec,
            )
        )
        back = await _next(changes, DeploymentRolledBack, timeout=120)
        assert back.error == "no new replica was ready within 1 s", back
        assert back.replicas == [old], back
    finally:
        await sub.unsubscribe()
    row = await ws.endpoints.deployment("ep", "blue")
    assert row["status"] == "Failed" and row["spec"]["env_vars"] == {}, row
    assert "no new replica was ready" in row["update_error"], row
