"""The endpoint and deployment aggregates as given-when-then tables: keys by digest, traffic
that adds up, replicas that report."""

from __future__ import annotations

from typing import Literal

import msgspec
import pytest

from cairn.domain import endpoint
from cairn.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound, StaleAttempt
from cairn.proto.events import (
    DeploymentCreated,
    DeploymentDeleted,
    DeploymentFailed,
    DeploymentRolledBack,
    DeploymentScaled,
    DeploymentUpdated,
    EndpointCreated,
    EndpointDeleted,
    EndpointKeysSet,
    EndpointUpdated,
    Event,
    ReplicaReady,
    ReplicaReplaced,
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
    ScaleSettings,
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

UPDATED = DeploymentUpdated(
    endpoint="ep",
    deployment="blue",
    spec=SPEC2,
    job=JOB,
    replicas=["r3", "r4"],
    retired=["r1", "r2"],
)
#: a roll under way: the first spec served (both replicas ready), the new one is starting
ROLLING = [D_CREATED, ready("r1"), ready("r2"), UPDATED, ready("r3")]


def failed(run: str, restore: dict[str, str] | None = None) -> endpoint.ReplicaFailed:
    return endpoint.ReplicaFailed(command=report(run, "failed"), restore=restore or {})


def rolled_back(replicas: list[str]) -> DeploymentRolledBack:
    return DeploymentRolledBack(
        endpoint="ep",
        deployment="blue",
        run_id="r4",
        attempt=1,
        error="Traceback",
        replicas=replicas,
        retired=["r3", "r4"],
    )


AUTO = DeploymentSpec(
    entry_script="score.py",
    scale=ScaleSettings(min_replicas=1, max_replicas=3, polling_interval_s=1),
)
A_CREATED = DeploymentCreated(
    endpoint="ep", deployment="blue", spec=AUTO, job=JOB, experiment_name="e", replicas=["r1"]
)
A_SERVING = [A_CREATED, ready("r1")]


def scale(
    before: int, to: int, added: list[str] | None = None, at: float = 100.0
) -> endpoint.ScaleDeployment:
    return endpoint.ScaleDeployment(
        at=at,
        cooldown_s=20.0,
        replicas_before=before,
        replicas=to,
        utilization_pct=300.0,
        target_pct=70.0,
        window_s=10.0,
        requests=40,
        added=added or [],
    )


def scaled(
    before: int, after: int, added: list[str], removed: list[str], at: float = 100.0
) -> DeploymentScaled:
    return DeploymentScaled(
        endpoint="ep",
        deployment="blue",
        replicas_before=before,
        replicas_after=after,
        utilization_pct=300.0,
        target_pct=70.0,
        window_s=10.0,
        at=at,
        requests=40,
        added=added,
        removed=removed,
    )


def replaced_failed(run: str, replacement: str) -> endpoint.ReplicaFailed:
    return endpoint.ReplicaFailed(command=report(run, "failed"), replacement=replacement)


def replaced(
    run: str, replacement: str, *, attempt: int, error: str, at: float = 0.0
) -> ReplicaReplaced:
    return ReplicaReplaced(
        endpoint="ep",
        deployment="blue",
        run_id=run,
        attempt=attempt,
        replacement=replacement,
        error=error,
        at=at,
    )


#: a third spec while the second one is still rolling
UPDATED_C = DeploymentUpdated(
    endpoint="ep",
    deployment="blue",
    spec=DeploymentSpec(entry_script="score3.py"),
    job=JOB,
    replicas=["r5"],
    retired=["r3", "r4"],
)

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
    # a roll whose new replica cannot start goes back to the previous spec
    Case(
        "a failed replica mid-roll rolls back",
        ROLLING,
        failed("r4"),
        [rolled_back(["r1", "r2"])],
    ),
    Case(
        "a previous replica the roll stopped comes back as a new run",
        ROLLING,
        failed("r4", {"r1": "r5"}),
        [rolled_back(["r5", "r2"])],
    ),
    Case(
        "a failed replica with no previous spec fails the deployment",
        [D_CREATED],
        failed("r2"),
        [
            DeploymentFailed(
                endpoint="ep", deployment="blue", run_id="r2", attempt=1, error="Traceback"
            )
        ],
    ),
    Case(
        "a failed replica of a rolled back spec",
        [*ROLLING, rolled_back(["r1", "r2"])],
        failed("r4"),
        StaleAttempt,
    ),
    # autoscaling, within the spec's bounds
    Case("scale up", A_SERVING, scale(1, 3, ["r2", "r3"]), [scaled(1, 3, ["r2", "r3"], [])]),
    Case(
        "scale up past the max",
        A_SERVING,
        scale(1, 9, ["r2", "r3"]),
        [scaled(1, 3, ["r2", "r3"], [])],
    ),
    Case(
        "scale down stops the newest",
        [*A_SERVING, scaled(1, 3, ["r2", "r3"], [])],
        scale(3, 1, at=130.0),
        [scaled(3, 1, [], ["r2", "r3"], at=130.0)],
    ),
    Case(
        "no change within the cooldown",
        [*A_SERVING, scaled(1, 3, ["r2", "r3"], [])],
        scale(3, 1, at=110.0),
        [],
    ),
    Case("scale to the same count", A_SERVING, scale(1, 0), []),
    Case("scale on a stale count", A_SERVING, scale(2, 3, ["r2"]), StaleAttempt),
    Case("scale without new run ids", A_SERVING, scale(1, 2), InvalidInput),
    Case(
        "scale a fixed deployment",
        [D_CREATED, ready("r1"), ready("r2")],
        scale(2, 3, ["r3"]),
        InvalidTransition,
    ),
    Case("scale while starting", [A_CREATED], scale(1, 2, ["r2"]), StaleAttempt),
    # a serving deployment's replica gone for good is replaced; its status stays
    Case(
        "a scaled-out replica whose init failed is replaced, the deployment still serving",
        [*A_SERVING, scaled(1, 2, ["r2"], [])],
        replaced_failed("r2", "r9"),
        [replaced("r2", "r9", attempt=1, error="Traceback")],
    ),
    Case(
        "a failure after the roll completed replaces the replica, no roll-back",
        [*ROLLING, ready("r4")],
        replaced_failed("r4", "r9"),
        [replaced("r4", "r9", attempt=1, error="Traceback")],
    ),
    Case(
        "a replacement needs a new run id",
        [*A_SERVING, scaled(1, 2, ["r2"], [])],
        replaced_failed("r2", "r1"),
        InvalidInput,
    ),
    Case(
        "a replica that failed when the deployment was first created still fails it",
        [D_CREATED],
        replaced_failed("r2", "r9"),
        [
            DeploymentFailed(
                endpoint="ep", deployment="blue", run_id="r2", attempt=1, error="Traceback"
            )
        ],
    ),
    Case(
        "a restored replica whose run was stopped is replaced",
        [*ROLLING, rolled_back(["r1", "r2"])],
        endpoint.ReplaceReplica(run_id="r1", replacement="r9", error="canceled", at=50.0),
        [replaced("r1", "r9", attempt=0, error="canceled", at=50.0)],
    ),
    Case(
        "a replica no longer named is not replaced",
        [*ROLLING, rolled_back(["r1", "r2"])],
        endpoint.ReplaceReplica(run_id="r4", replacement="r9", error="canceled", at=50.0),
        [],
    ),
    # a roll with no new replica ready within its deadline is rolled back
    Case(
        "a roll past its deadline is rolled back",
        [D_CREATED, ready("r1"), ready("r2"), UPDATED],
        endpoint.RollTimedOut(at=2000.0, since=100.0),
        [
            msgspec.structs.replace(
                rolled_back(["r1", "r2"]),
                run_id="r3",
                attempt=0,
                error="no new replica was ready within 1800 s",
            )
        ],
    ),
    Case(
        "a roll within its deadline goes on",
        [D_CREATED, ready("r1"), ready("r2"), UPDATED],
        endpoint.RollTimedOut(at=1000.0, since=100.0),
        [],
    ),
    Case(
        "a roll with a new replica ready goes on past its deadline",
        ROLLING,
        endpoint.RollTimedOut(at=5000.0, since=100.0),
        [],
    ),
    Case(
        "no roll, no deadline",
        [D_CREATED, ready("r1"), ready("r2")],
        endpoint.RollTimedOut(at=5000.0, since=100.0),
        [],
    ),
    # A -> B -> C while B is still rolling: C failing goes back to A, which last served
    Case(
        "a rollback during a rollback goes back to the spec that last served",
        [D_CREATED, ready("r1"), ready("r2"), UPDATED, UPDATED_C],
        failed("r5"),
        [
            DeploymentRolledBack(
                endpoint="ep",
                deployment="blue",
                run_id="r5",
                attempt=1,
                error="Traceback",
                replicas=["r1", "r2"],
                retired=["r5"],
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


def test_a_rolled_back_deployment_serves_its_previous_spec() -> None:
    """The previous spec, its replicas and their readiness are the deployment's again; the
    new spec's replicas are retired; the reason shows."""
    state = endpoint.DEPLOYMENT.fold([*ROLLING, rolled_back(["r5", "r2"])])
    assert state.spec == SPEC and state.replicas == ("r5", "r2")
    assert state.ready == {"r2": 1}
    assert state.status == endpoint.DeploymentStatus.FAILED and state.serving
    assert state.update_error == "Traceback" and "rolled back" in state.error
    assert state.retired[-2:] == ("r3", "r4") and "r2" not in state.retired
    assert state.previous is None
    # a later good spec rolls out from the restored one, and clears the failed update's note
    rolling = endpoint.DEPLOYMENT.fold(
        [*ROLLING, rolled_back(["r5", "r2"]), ready("r5"), UPDATED_AGAIN]
    )
    assert rolling.previous is not None and rolling.previous.replicas == ("r5", "r2")
    done = endpoint.DEPLOYMENT.fold([ready("r6")], onto=rolling)
    assert done.status == endpoint.DeploymentStatus.SUCCEEDED and done.update_error == ""
    assert done.previous is None


UPDATED_AGAIN = DeploymentUpdated(
    endpoint="ep", deployment="blue", spec=SPEC2, job=JOB, replicas=["r6"], retired=["r5", "r2"]
)


def test_retired_replicas_are_bounded() -> None:
    """However many specs roll out, the deployment keeps the newest RETIRED_KEPT retired."""
    events: list[Event] = [D_CREATED]
    before = ["r1", "r2"]
    for n in range(200):
        replicas = [f"n{n}a", f"n{n}b"]
        events.append(
            DeploymentUpdated(
                endpoint="ep",
                deployment="blue",
                spec=SPEC2,
                job=JOB,
                replicas=replicas,
                retired=before,
            )
        )
        before = replicas
    state = endpoint.DEPLOYMENT.fold(events)
    assert len(state.retired) == endpoint.RETIRED_KEPT
    assert state.retired[-1] == "n198b" and state.replicas == ("n199a", "n199b")


def test_a_replaced_replica_keeps_the_deployment_serving_and_backs_off() -> None:
    """The successor takes the failed replica's place (the count stays), the failed one is
    retired, the status stays Succeeded and autoscaling goes on; each replacement in a row
    doubles the back-off, and a replica ready again starts it over."""
    events: list[Event] = [*A_SERVING, scaled(1, 2, ["r2"], [])]
    state = endpoint.DEPLOYMENT.fold(
        [*events, replaced("r2", "r9", attempt=1, error="boom", at=1000.0)]
    )
    assert state.replicas == ("r1", "r9") and "r2" in state.retired
    assert state.status == endpoint.DeploymentStatus.SUCCEEDED and state.serving
    assert state.replacements == 1
    assert endpoint.replace_after(state) == 1000.0 + endpoint.REPLACE_FIRST_S
    again = endpoint.DEPLOYMENT.fold(
        [replaced("r9", "r10", attempt=1, error="boom", at=1010.0)], onto=state
    )
    assert endpoint.replace_after(again) == 1010.0 + 2 * endpoint.REPLACE_FIRST_S
    assert again.replacements == 2
    well = endpoint.DEPLOYMENT.fold([ready("r10")], onto=again)
    assert endpoint.replace_after(well) == 0.0 and well.replacements == 2


def test_an_update_records_when_its_roll_started() -> None:
    command = msgspec.structs.replace(resolved(["r3"], SPEC2), at=123.0)
    state = endpoint.DEPLOYMENT.fold([D_CREATED, ready("r1"), ready("r2")])
    (updated,) = endpoint.DEPLOYMENT.decide(state, command)
    assert isinstance(updated, DeploymentUpdated) and updated.at == 123.0
    assert endpoint.DEPLOYMENT.fold([updated], onto=state).rolling_since == 123.0
