"""The endpoint and deployment aggregates as given-when-then tables: keys by digest, traffic
that adds up, replicas that report."""

from __future__ import annotations

from typing import Literal

import pytest

from cairn.domain import endpoint
from cairn.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound, StaleAttempt
from cairn.proto.events import (
    DeploymentCreated,
    DeploymentDeleted,
    DeploymentFailed,
    DeploymentUpdated,
    EndpointCreated,
    EndpointDeleted,
    EndpointKeysSet,
    EndpointUpdated,
    ReplicaReady,
)
from cairn.proto.jobs import JobSpec
from cairn.proto.serving import (
    CreateEndpoint,
    DeleteDeployment,
    DeleteEndpoint,
    DeploymentSpec,
    DeployModel,
    ModelRef,
    ReportReplica,
    SetEndpointKeys,
    UpdateEndpoint,
)
from tests.domain.gwt import Case, check, ids

H1, H2, H3 = ("sha256:" + c * 64 for c in "123")
CREATE = CreateEndpoint(command_id="c", endpoint="ep", key_hashes=[H1, H2])
CREATED = EndpointCreated(endpoint="ep", key_hashes=[H1, H2])


def traffic(
    weights: dict[str, int] | None, known: list[str], mirror: dict[str, int] | None = None
) -> endpoint.ResolvedTraffic:
    command = UpdateEndpoint(command_id="c", endpoint="ep", traffic=weights, mirror_traffic=mirror)
    return endpoint.ResolvedTraffic(command=command, deployments=known)


BLUE_ALL = EndpointUpdated(endpoint="ep", traffic={"blue": 100})


ENDPOINT_CASES = [
    Case("create", [], CREATE, [CREATED]),
    Case("create twice", [CREATED], CREATE, AlreadyExists),
    Case(
        "two keys",
        [],
        CreateEndpoint(command_id="c", endpoint="ep", key_hashes=[H1]),
        InvalidInput,
        "two keys",
    ),
    Case("create after delete", [CREATED, EndpointDeleted(endpoint="ep")], CREATE, [CREATED]),
    Case(
        "traffic",
        [CREATED],
        traffic({"blue": 90, "green": 10}, ["blue", "green"]),
        [EndpointUpdated(endpoint="ep", traffic={"blue": 90, "green": 10})],
    ),
    Case("traffic adds up", [CREATED], traffic({"blue": 90}, ["blue"]), InvalidInput, "90"),
    Case("traffic to a deployment", [CREATED], traffic({"red": 100}, ["blue"]), NotFound, "red"),
    Case(
        "the same traffic again",
        [CREATED, EndpointUpdated(endpoint="ep", traffic={"blue": 100})],
        traffic({"blue": 100, "green": 0}, ["blue", "green"]),
        [],
    ),
    Case("traffic of no endpoint", [], traffic({}, []), NotFound),
    Case(
        "mirror a share",
        [CREATED, BLUE_ALL],
        traffic(None, ["blue", "green"], {"green": 10}),
        [EndpointUpdated(endpoint="ep", mirror={"green": 10})],
    ),
    Case(
        "mirror at most half",
        [CREATED, BLUE_ALL],
        traffic(None, ["blue", "green"], {"green": 60}),
        InvalidInput,
        "50",
    ),
    Case(
        "mirror to one deployment",
        [CREATED, EndpointUpdated(endpoint="ep", traffic={"blue": 100})],
        traffic(None, ["blue", "green", "red"], {"green": 10, "red": 10}),
        InvalidInput,
        "one deployment",
    ),
    Case(
        "mirror to live traffic",
        [CREATED, BLUE_ALL],
        traffic(None, ["blue"], {"blue": 10}),
        InvalidInput,
        "live traffic",
    ),
    Case(
        "live traffic to the mirror",
        [CREATED, BLUE_ALL, EndpointUpdated(endpoint="ep", mirror={"green": 10})],
        traffic({"blue": 50, "green": 50}, ["blue", "green"]),
        InvalidInput,
        "live traffic",
    ),
    Case(
        "stop mirroring",
        [CREATED, BLUE_ALL, EndpointUpdated(endpoint="ep", mirror={"green": 10})],
        traffic(None, ["blue", "green"], {}),
        [EndpointUpdated(endpoint="ep", mirror={})],
    ),
    Case(
        "regenerate the primary key",
        [CREATED],
        SetEndpointKeys(command_id="c", endpoint="ep", slot="primary", key_hash=H3),
        [EndpointKeysSet(endpoint="ep", key_hashes=[H3, H2])],
    ),
    Case(
        "regenerate the secondary key",
        [CREATED],
        SetEndpointKeys(command_id="c", endpoint="ep", slot="secondary", key_hash=H3),
        [EndpointKeysSet(endpoint="ep", key_hashes=[H1, H3])],
    ),
    Case(
        "delete",
        [CREATED],
        DeleteEndpoint(command_id="c", endpoint="ep"),
        [EndpointDeleted(endpoint="ep")],
    ),
    Case(
        "delete twice",
        [CREATED, EndpointDeleted(endpoint="ep")],
        DeleteEndpoint(command_id="c", endpoint="ep"),
        [],
    ),
    Case("delete none", [], DeleteEndpoint(command_id="c", endpoint="ep"), NotFound),
]

SPEC = DeploymentSpec(models=[ModelRef(name="m", version=1)], entry_script="score.py")
SPEC2 = DeploymentSpec(entry_script="score2.py")
JOB = JobSpec(command=["python", "-m", "cairn.serving"])
DEPLOY = DeployModel(command_id="c", endpoint="ep", deployment="blue", spec=SPEC)
D_CREATED = DeploymentCreated(
    endpoint="ep",
    deployment="blue",
    spec=SPEC,
    job=JOB,
    experiment_name="endpoint-ep",
    replicas=["r1", "r2"],
)


def resolved(replicas: list[str], spec: DeploymentSpec = SPEC) -> endpoint.ResolvedDeploy:
    command = DeployModel(command_id="c", endpoint="ep", deployment="blue", spec=spec)
    return endpoint.ResolvedDeploy(
        command=command, job=JOB, replicas=replicas, experiment_name="endpoint-ep"
    )


def report(
    run: str, phase: Literal["ready", "failed"] = "ready", attempt: int = 1
) -> ReportReplica:
    return ReportReplica(
        command_id="c",
        endpoint="ep",
        deployment="blue",
        run_id=run,
        attempt=attempt,
        phase=phase,
        error="Traceback" if phase == "failed" else "",
    )


def ready(run: str, attempt: int = 1) -> ReplicaReady:
    return ReplicaReady(endpoint="ep", deployment="blue", run_id=run, attempt=attempt)


RETIRE = endpoint.RetireDeployment(
    command=DeleteDeployment(command_id="c", endpoint="ep", deployment="blue")
)
DELETED = DeploymentDeleted(endpoint="ep", deployment="blue", replicas=["r1", "r2"])

DEPLOYMENT_CASES = [
    Case("create", [], resolved(["r1", "r2"]), [D_CREATED]),
    Case("no replicas", [], resolved([]), InvalidInput),
    Case(
        "a new spec replaces the replicas",
        [D_CREATED],
        resolved(["r3"], SPEC2),
        [
            DeploymentUpdated(
                endpoint="ep",
                deployment="blue",
                spec=SPEC2,
                job=JOB,
                replicas=["r3"],
                retired=["r1", "r2"],
            )
        ],
    ),
    Case("the same replicas again", [D_CREATED], resolved(["r1"]), AlreadyExists),
    Case("ready", [D_CREATED], report("r1"), [ready("r1")]),
    Case("ready again", [D_CREATED, ready("r1")], report("r1"), []),
    Case(
        "ready in a new attempt",
        [D_CREATED, ready("r1")],
        report("r1", attempt=2),
        [ready("r1", 2)],
    ),
    Case("a stranger's report", [D_CREATED], report("r9"), StaleAttempt),
    Case("a report after delete", [D_CREATED, DELETED], report("r1"), InvalidTransition),
    Case(
        "init failed",
        [D_CREATED],
        report("r2", "failed"),
        [
            DeploymentFailed(
                endpoint="ep", deployment="blue", run_id="r2", attempt=1, error="Traceback"
            )
        ],
    ),
    Case("delete", [D_CREATED], RETIRE, [DELETED]),
    Case("delete twice", [D_CREATED, DELETED], RETIRE, []),
    Case("delete none", [], RETIRE, NotFound),
    Case(
        "create after delete",
        [D_CREATED, DELETED],
        resolved(["r5"]),
        [
            DeploymentCreated(
                endpoint="ep",
                deployment="blue",
                spec=SPEC,
                job=JOB,
                experiment_name="endpoint-ep",
                replicas=["r5"],
            )
        ],
    ),
]


@pytest.mark.parametrize("case", ENDPOINT_CASES, ids=ids(ENDPOINT_CASES))
def test_endpoint(case: Case) -> None:
    check(endpoint.ENDPOINT, case)


@pytest.mark.parametrize("case", DEPLOYMENT_CASES, ids=ids(DEPLOYMENT_CASES))
def test_deployment(case: Case) -> None:
    check(endpoint.DEPLOYMENT, case)


def test_status_follows_the_replicas() -> None:
    """Creating until every replica was ready once; a failed init fails it."""
    agg = endpoint.DEPLOYMENT
    assert agg.fold([D_CREATED, ready("r1")]).status == endpoint.DeploymentStatus.CREATING
    done = agg.fold([D_CREATED, ready("r1"), ready("r2")])
    assert done.status == endpoint.DeploymentStatus.SUCCEEDED
    failed = agg.fold(
        [
            D_CREATED,
            DeploymentFailed(
                endpoint="ep", deployment="blue", run_id="r1", attempt=1, error="boom"
            ),
        ]
    )
    assert failed.status == endpoint.DeploymentStatus.FAILED and failed.error == "boom"
    assert agg.fold([D_CREATED, DELETED]).retired == ("r1", "r2")
