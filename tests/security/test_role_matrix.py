"""The role matrix of docs/security.md, cell by cell, against the real server and services:
each role sends one message of each command or query family to a workspace it is a member of
(with that role) and to another that exists; ``allowed`` means it reached a service (which
may still answer with an error of its own), ``denied`` means ``PermissionDenied`` (from the
server's permissions or from the services' membership check)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection, EventStore, connect
from cairn.embedded import NatsServer
from cairn.embedded._users import create_token, revoke_token
from cairn.errors import AlreadyExists, CairnError, PermissionDenied, Unauthenticated
from cairn.proto.artifacts import OpenUpload
from cairn.proto.assets import (
    ComponentSpec,
    ComputeSpec,
    CreateCompute,
    EnvironmentSpec,
    RegisterComponent,
    RegisterEnvironment,
)
from cairn.proto.batch import BatchDeploymentSpec, SetBatchDeployment
from cairn.proto.commands import (
    Command,
    CreateExperiment,
    CreateWorkspace,
    ListExperiments,
    Query,
    StartRun,
)
from cairn.proto.feed import ReadEvents
from cairn.proto.jobs import JobSpec, ReportJob, SubmitJob
from cairn.proto.members import AddMember
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.proto.parallel import TakeMiniBatch
from cairn.proto.pipelines import (
    PipelineSpec,
    PipelineStep,
    RunPublishedPipeline,
    SubmitPipeline,
)
from cairn.proto.registry import RegisterModelVersion
from cairn.proto.schedules import DisableSchedule
from cairn.proto.secrets import ReadSecret, SetSecret
from cairn.proto.serving import ReportReplica, RouteEndpoint, UpdateEndpoint
from cairn.proto.subjects import PROJECTION_VERIFY, audit_chain
from cairn.proto.sweeps import CancelSweep
from cairn.proto.webhooks import DeleteWebhook
from cairn.rpc import SCORER_USER, Client
from cairn.settings import Settings
from cairn.tokens import parse_token
from tests.conftest import MATRIX_WS, add_people

MATRIX = Path(__file__).parents[2] / "docs" / "security.md"
HEADER = "| role | family | own workspace | other workspace |"
#: who plays each role of the table
ROLE_USERS = {
    "data scientist": "mx-ds",
    "compute operator": "mx-co",
    "auditor": "mx-aud",
    "agent": "agent",
}


def cid() -> str:
    return uuid.uuid4().hex


def _family(ws: str) -> dict[str, Callable[[], Command | Query]]:
    """One message per family (fresh ids each time); none changes anything another test
    reads, and most are refused by the service after the server let them through."""
    return {
        "workspace commands": lambda: CreateWorkspace(command_id=cid(), name=ws),
        "experiment commands": lambda: CreateExperiment(command_id=cid(), name="matrix"),
        "run commands": lambda: StartRun(command_id=cid(), run_id="mx-missing"),
        "metrics commands": lambda: LogMetrics(
            command_id=cid(),
            run_id="mx-missing",
            points=[MetricPoint(name="m", kind="scalar", value=1.0, step=0, time=0.0)],
        ),
        "artifact commands": lambda: OpenUpload(
            command_id=cid(), run_id="mx-missing", path="x.txt", size=1
        ),
        "model commands": lambda: RegisterModelVersion(
            command_id=cid(), name="mx-model", path="mx-missing", run_id="mx-missing"
        ),
        "environment commands": lambda: RegisterEnvironment(
            command_id=cid(), name="mx-env", spec=EnvironmentSpec()
        ),
        "job submission": lambda: SubmitJob(
            command_id=cid(),
            run_id=cid()[:12],
            experiment_name="matrix",
            compute="mx-none",
            job=JobSpec(command=["true"]),
            environment_name="mx-missing",
        ),
        "schedule commands": lambda: DisableSchedule(command_id=cid(), name="mx-missing"),
        "component commands": lambda: RegisterComponent(
            command_id=cid(), name="mx-component", spec=ComponentSpec(command="echo matrix")
        ),
        "pipeline submission": lambda: SubmitPipeline(
            command_id=cid(),
            run_id=cid()[:12],
            experiment_name="matrix",
            pipeline=PipelineSpec(
                steps=[PipelineStep(name="a", compute="mx-none", job=JobSpec(command=["true"]))]
            ),
        ),
        "published pipelines": lambda: RunPublishedPipeline(
            command_id=cid(), run_id=cid()[:12], experiment_name="matrix", pipeline_id="mx-none"
        ),
        "parallel batches": lambda: TakeMiniBatch(
            command_id=cid(), run_id="mx-missing", attempt=1, step="mx"
        ),
        "batch endpoint commands": lambda: SetBatchDeployment(
            command_id=cid(),
            endpoint="mx-none",
            name="mx",
            spec=BatchDeploymentSpec(
                job=JobSpec(command=[]), scoring_script="s.py", compute="mx-none"
            ),
        ),
        "job reports": lambda: ReportJob(command_id=cid(), run_id="mx-missing", attempt=1),
        "sweep commands": lambda: CancelSweep(command_id=cid(), run_id="mx-missing"),
        "compute commands": lambda: CreateCompute(
            command_id=cid(), name="mx-compute", spec=ComputeSpec(kind="cluster", max_nodes=1)
        ),
        "secret reads": lambda: ReadSecret(command_id=cid(), name="mx-missing"),
        "secret writes": lambda: SetSecret(command_id=cid(), name="mx-secret", value="x"),
        "member commands": lambda: AddMember(
            command_id=cid(), user="mx-ds", roles=["auditor", "data_scientist"]
        ),
        "endpoint commands": lambda: UpdateEndpoint(
            command_id=cid(), endpoint="mx-missing", traffic={}
        ),
        "replica reports": lambda: ReportReplica(
            command_id=cid(),
            endpoint="mx-missing",
            deployment="mx-missing",
            run_id="mx-missing",
            attempt=1,
            phase="ready",
        ),
        "queries": lambda: ListExperiments(),
        "webhook commands": lambda: DeleteWebhook(command_id=cid(), webhook_id="mx-missing"),
        "event feed": lambda: ReadEvents(limit=1),
    }


def read_matrix() -> list[tuple[str, str, str, str]]:
    """The table's rows: role, family, own workspace, other workspace."""
    lines = MATRIX.read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        role, family, own, other = (c.strip() for c in line.strip("|").split("|"))
        rows.append((role, family, own, other))
    return rows


async def outcome(client: Client, message: Command | Query) -> str:
    try:
        if isinstance(message, Query):
            await client.ask(message)
        else:
            await client.send_any(message)
    except PermissionDenied:
        return "denied"
    except CairnError:  # the service answered: the server let the request through
        pass
    return "allowed"


def test_the_matrix_covers_every_role_and_family() -> None:
    rows = read_matrix()
    cells = {(role, family) for role, family, _, _ in rows}
    assert len(cells) == len(rows), "a role and family appear twice"
    assert cells == {(r, f) for r in ROLE_USERS for f in _family("x")}
    for _, _, own, other in rows:
        assert {own, other} <= {"allowed", "denied"}


@contextlib.asynccontextmanager
async def token_conns(
    server: NatsServer, settings: Settings, names: list[str]
) -> AsyncIterator[dict[str, Connection]]:
    """A connection per person of ``names`` made with an API token of theirs (revoked after)."""
    made = {name: create_token(server.home, name, "matrix") for name in names}
    conns: dict[str, Connection] = {}
    try:
        for name, (_, token, _) in made.items():
            user, secret = parse_token(token)
            as_token = msgspec.structs.replace(settings, nats_user=user, nats_password=secret)
            conns[name] = await connect(as_token)
        yield conns
    finally:
        for connection in conns.values():
            await connection.close()
        for row, _, _ in made.values():
            revoke_token(server.home, row["id"])


@pytest.mark.parametrize("via", ["password", "token"])
async def test_every_cell_of_the_role_matrix(
    via: str,
    services: None,
    people: dict[str, Connection],
    agent_conn: Connection,
    client_conn: Connection,
    admin_conn: Connection,
    nats_server: NatsServer,
    client_settings: Settings,
) -> None:
    """Each person's row, connected with their password and then with an API token of theirs
    (a token's permissions are its person's)."""
    other_ws = "mx" + uuid.uuid4().hex[:10]
    for ws in (MATRIX_WS, other_ws):  # both exist; the role's user is a member of its own
        with contextlib.suppress(AlreadyExists):  # another test may have made MATRIX_WS
            await Client(client_conn, ws).send(CreateWorkspace(command_id=cid(), name=ws))
    await add_people(admin_conn, MATRIX_WS, "mx-ds", "mx-co", "mx-aud")
    names = [ROLE_USERS[r] for r in ROLE_USERS if r != "agent"]
    async with contextlib.AsyncExitStack() as stack:
        if via == "token":
            people = await stack.enter_async_context(
                token_conns(nats_server, client_settings, names)
            )
        await _check_matrix({**people, "agent": agent_conn}, other_ws)


async def _check_matrix(conns: dict[str, Connection], other_ws: str) -> None:
    checks = []
    for role, family, own, other in read_matrix():
        conn = conns[ROLE_USERS[role]]
        for ws, expected in ((MATRIX_WS, own), (other_ws, other)):
            client = Client(conn, ws, attempts=1, timeout=3)
            message = _family(ws)[family]()
            checks.append(((role, family, ws, expected), outcome(client, message)))
    got = await asyncio.gather(*(check for _, check in checks))
    wrong = [
        f"{role} / {family} in {'own' if ws == MATRIX_WS else 'other'}: {actual}, not {expected}"
        for ((role, family, ws, expected), _), actual in zip(checks, got, strict=True)
        if actual != expected
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("user", ["mx-ds", "mx-co", "mx-aud", "agent", "service"])
async def test_only_the_admin_snapshots_reads_everything_or_writes_streams_directly(
    user: str, people: dict[str, Connection], agent_conn: Connection, conn: Connection
) -> None:
    """No snapshot, restore or deletion of a stream, no chunk into a running restore or
    snapshot (``$JS.SNAPSHOT.>``), no subscription to ``>`` or to the API audit advisories
    (they carry a restore's chunk subject), no place in a service's
    queue group, no message straight into METRICS, LOGS or a KV bucket, except what a user of
    the stack needs for its work: services serve and write METRICS and KV, agents write their
    jobs' logs and their heartbeat key. Nor may anyone but the services (and the admin) ask
    the services to verify their read models against a replay, or append a checkpoint to a
    workspace's audit chain."""
    c = {**people, "agent": agent_conn, "service": conn}[user]
    publish = [
        "$JS.API.STREAM.SNAPSHOT.EVENTS",
        "$JS.API.STREAM.RESTORE.EVENTS",
        "$JS.API.STREAM.DELETE.EVENTS",
        "$JS.SNAPSHOT.RESTORE.EVENTS.x",
        "$JS.SNAPSHOT.ACK.EVENTS.x.1.1",
    ]
    watched = [">", "$JS.EVENT.ADVISORY.API"]
    queue_groups: list[str] = []
    if user != "service":
        publish += [f"cairn.metrics.{MATRIX_WS}.x", f"$KV.cairn_job_leases.{MATRIX_WS}.x"]
        publish.append(PROJECTION_VERIFY)  # a full replay of the log per read model
        publish.append(audit_chain(MATRIX_WS))  # a checkpoint of the audit chain
        queue_groups.append("cairn.cmd.*.run.>")
    if user not in ("service", "agent"):
        publish += [f"cairn.logs.{MATRIX_WS}.x", "$KV.cairn_agents.mx-fake"]
    for subject in publish:
        await c.nc.publish(subject, b"{}")
    subs = [await c.nc.subscribe(s) for s in watched]
    subs += [await c.nc.subscribe(s, queue="tracking") for s in queue_groups]
    await c.nc.flush()
    wanted = [*publish, *watched, *queue_groups]
    for _ in range(50):
        if all(c.denied(s) for s in wanted):
            break
        await asyncio.sleep(0.05)
    for sub in subs:
        await sub.unsubscribe()
    assert [s for s in wanted if not c.denied(s)] == []


@pytest.mark.parametrize("user", ["mx-ds", "mx-co", "mx-aud", "agent"])
async def test_people_may_ask_the_audit_service_for_its_key_and_agents_may_not(
    user: str,
    services: None,
    people: dict[str, Connection],
    agent_conn: Connection,
    service_settings: Settings,
) -> None:
    """``cairn.svc.audit.key`` is one of the broadcasts people send (the key is public);
    agents send none."""
    from cairn.audit import public_key_hex, public_key_path, read_public_key
    from cairn.proto.subjects import AUDIT_KEY

    c = {**people, "agent": agent_conn}[user]
    if user == "agent":
        await c.nc.publish(AUDIT_KEY, b"")
        await c.nc.flush()
        for _ in range(50):
            if c.denied(AUDIT_KEY):
                break
            await asyncio.sleep(0.05)
        assert c.denied(AUDIT_KEY)
        return
    reply = await c.nc.request(AUDIT_KEY, b"", timeout=5)
    public = read_public_key(public_key_path(service_settings))
    assert json.loads(reply.data)["public_key"] == public_key_hex(public)


async def test_the_scoring_user_reaches_deployments_and_routes_alone(
    services: None,
    nats_server: NatsServer,
    client_settings: Settings,
    people: dict[str, Connection],
    agent_conn: Connection,
    conn: Connection,
) -> None:
    """The gateway's scoring user may send requests to deployments and ask an endpoint's
    route (which the scheduler answers only with a key); nothing else. People may not reach
    deployments' subjects at all (only through the gateway); agents may take their requests."""
    assert nats_server.credentials is not None
    settings = msgspec.structs.replace(
        client_settings,
        nats_user=SCORER_USER,
        nats_password=nats_server.credentials.scorer_password,
    )
    scorer = await connect(settings)
    try:
        route = RouteEndpoint(endpoint="mx-missing", key="not-a-key")
        with pytest.raises(Unauthenticated, match="no valid key"):  # the scheduler's answer
            await Client(scorer, MATRIX_WS, attempts=1, timeout=3).ask(route)
        refused = [
            UpdateEndpoint(command_id=cid(), endpoint="mx-missing", traffic={}),
            ListExperiments(),
        ]
        for message in refused:
            got = await outcome(Client(scorer, MATRIX_WS, attempts=1, timeout=3), message)
            assert got == "denied", message
        await scorer.nc.publish(f"cairn.serve.{MATRIX_WS}.mx-ep.blue", b"{}")
        sub = await scorer.nc.subscribe("cairn.serve.>")
        person = people["mx-ds"]
        await person.nc.publish(f"cairn.serve.{MATRIX_WS}.mx-ep.blue", b"{}")
        person_sub = await person.nc.subscribe("cairn.serve.>", queue="replicas")
        agent_sub = await agent_conn.nc.subscribe("cairn.serve.>", queue="replicas")
        for c in (scorer, person, agent_conn):
            await c.nc.flush()
        for _ in range(50):
            if scorer.denied("cairn.serve.>") and person.denied("cairn.serve.>"):
                break
            await asyncio.sleep(0.05)
        assert scorer.denied("cairn.serve.>") and person.denied("cairn.serve.>")
        assert person.denied(f"cairn.serve.{MATRIX_WS}.mx-ep.blue")
        assert not scorer.denied(f"cairn.serve.{MATRIX_WS}.mx-ep.blue")
        assert not agent_conn.denied("cairn.serve.>")
        for s in (sub, person_sub, agent_sub):
            await s.unsubscribe()
        # the endpoints' events (the gateway drops a kept route on them), and no other's: a
        # deployment's carry its job's spec
        watched = await scorer.nc.subscribe("cairn.ev.*.endpoint.*")
        others = [
            await scorer.nc.subscribe(s)
            for s in ("cairn.ev.*.deployment.*", "cairn.ev.>", f"cairn.ev.{MATRIX_WS}.run.*")
        ]
        await scorer.nc.flush()
        for _ in range(50):
            if scorer.denied("cairn.ev.>"):
                break
            await asyncio.sleep(0.05)
        assert not scorer.denied("cairn.ev.*.endpoint.*")
        for s in ("cairn.ev.*.deployment.*", "cairn.ev.>", f"cairn.ev.{MATRIX_WS}.run.*"):
            assert scorer.denied(s), s
        for s in (watched, *others):
            await s.unsubscribe()
        # a request whose reply subject is no inbox is dropped unanswered: an answer there
        # would be published with the services' authority (here: into EVENTS)
        victim = f"cairn.ev.{MATRIX_WS}.endpoint.mx-victim"
        body = msgspec.json.encode(route)
        await scorer.nc.publish(f"cairn.q.{MATRIX_WS}.endpoint.route", body, reply=victim)
        await scorer.nc.flush()
        await asyncio.sleep(0.5)  # where an answer would have been appended by now
        assert await EventStore(conn).read(victim) == []
    finally:
        await scorer.close()
