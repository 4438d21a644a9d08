"""Online endpoints and their deployments: two aggregates.

An **endpoint** (``cairn.ev.<ws>.endpoint.<name>``) holds the sha256 digests of its two keys
and the traffic weights of its deployments. A **deployment**
(``cairn.ev.<ws>.deployment.<endpoint>_<name>``) holds its spec and the runs of its replicas:
each replica is a job (``JobSpec.serve``) that the scheduler leases, and re-queues when lost,
like any other. A deployment is ``Creating`` until every replica has reported ready once,
then ``Succeeded``; a replica whose ``init()`` raised makes it ``Failed`` (until a new spec
replaces it); a deleted one is ``Deleted`` and may be created again.

A new spec of a ``Succeeded`` deployment rolls out: the previous spec (its job, replicas and
their readiness) is kept until every new replica is ready. A new replica that cannot start
meanwhile, or none ready within the spec's ``rollout_timeout_s``, rolls the deployment back
(``DeploymentRolledBack``): the previous spec is its own again and it is ``Failed`` with the
reason, while the previous replicas serve on. Replicas of earlier specs are kept by run id for
the last ``RETIRED_KEPT`` only (bounded however often it rolls); the scheduler stops every
running replica run of a deployment that its state no longer names, so a replica that fell off
that list while still running is stopped all the same (``Endpoints.converge``).

Once a deployment serves, a replica that is gone for good (a scaled-out or restored one whose
``init()`` raised, or one whose run ended while the deployment still names it) is replaced
(``ReplicaReplaced``) with a back-off that grows with the replacements in a row; the status
stays: only a new spec's replica failing fails or rolls back a deployment.

With ``spec.scale`` the replica count moves within its bounds (``ScaleDeployment``, the
scheduler's decision from the replicas' request metrics, ``DeploymentScaled``).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from cairn.domain import Aggregate
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
    MAX_REPLICAS,
    CreateEndpoint,
    DeleteDeployment,
    DeleteEndpoint,
    DeploymentSpec,
    DeployModel,
    ReportReplica,
    SetEndpointKeys,
    UpdateEndpoint,
)

__all__ = [
    "DEPLOYMENT",
    "ENDPOINT",
    "REPLACE_FIRST_S",
    "REPLACE_MOST_S",
    "RETIRED_KEPT",
    "DeploymentCommand",
    "DeploymentState",
    "DeploymentStatus",
    "EndpointCommand",
    "EndpointState",
    "PreviousSpec",
    "ReplaceReplica",
    "ReplicaFailed",
    "ResolvedDeploy",
    "ResolvedTraffic",
    "RetireDeployment",
    "RollTimedOut",
    "ScaleDeployment",
    "replace_after",
]

#: how many runs of earlier specs a deployment keeps by id (the newest)
RETIRED_KEPT = 2 * MAX_REPLICAS
#: a replaced replica's successor starts after this, doubling with each replacement in a row
#: (one ready again starts it over), up to the most
REPLACE_FIRST_S = 5.0
REPLACE_MOST_S = 300.0

#: key slots, in the order of ``key_hashes``
SLOTS = ("primary", "secondary")


class EndpointState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    deleted: bool = False
    name: str = ""
    key_hashes: tuple[str, ...] = ()
    traffic: dict[str, int] = msgspec.field(default_factory=dict)
    mirror: dict[str, int] = msgspec.field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.exists and not self.deleted


def evolve_endpoint(state: EndpointState, event: Event) -> EndpointState:
    match event:
        case EndpointCreated() as ev:
            return EndpointState(
                exists=True,
                name=ev.endpoint,
                key_hashes=tuple(ev.key_hashes),
                description=ev.description,
                tags=dict(ev.tags),
            )
        case EndpointUpdated() as ev:
            return msgspec.structs.replace(
                state,
                traffic=state.traffic if ev.traffic is None else dict(ev.traffic),
                description=state.description if ev.description is None else ev.description,
                tags=state.tags if ev.tags is None else dict(ev.tags),
                mirror=state.mirror if ev.mirror is None else dict(ev.mirror),
            )
        case EndpointKeysSet(key_hashes=hashes):
            return msgspec.structs.replace(state, key_hashes=tuple(hashes))
        case EndpointDeleted():
            return msgspec.structs.replace(state, deleted=True, traffic={}, mirror={})
    return state


class ResolvedTraffic(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``UpdateEndpoint`` with the names of the endpoint's live deployments (looked up by the
    service), which are all that traffic may go to."""

    command: UpdateEndpoint
    deployments: list[str]


EndpointCommand = CreateEndpoint | ResolvedTraffic | SetEndpointKeys | DeleteEndpoint


def decide_endpoint(state: EndpointState, command: EndpointCommand) -> list[Event]:
    match command:
        case CreateEndpoint():
            if state.live:
                raise AlreadyExists(f"endpoint {command.endpoint} already exists")
            if len(command.key_hashes) != len(SLOTS):
                raise InvalidInput("an endpoint has two keys: give the digests of both")
            return [
                EndpointCreated(
                    endpoint=command.endpoint,
                    key_hashes=command.key_hashes,
                    description=command.description,
                    tags=command.tags,
                )
            ]
        case ResolvedTraffic():
            return _update(_live(state, command.command.endpoint), command)
        case SetEndpointKeys(slot=slot, key_hash=key_hash):
            _live(state, command.endpoint)
            hashes = list(state.key_hashes)
            hashes[SLOTS.index(slot)] = key_hash
            return [EndpointKeysSet(endpoint=state.name, key_hashes=hashes)]
        case DeleteEndpoint(endpoint=name):
            if not state.exists:
                raise NotFound(f"endpoint {name} does not exist")
            return [] if state.deleted else [EndpointDeleted(endpoint=name)]


def _live(state: EndpointState, name: str) -> EndpointState:
    if not state.live:
        raise NotFound(f"endpoint {name} does not exist")
    return state


def _known(state: EndpointState, weights: dict[str, int], deployments: list[str]) -> None:
    unknown = sorted(set(weights) - set(deployments))
    if unknown:
        raise NotFound(f"endpoint {state.name} has no deployment {', '.join(unknown)}")


def _update(state: EndpointState, command: ResolvedTraffic) -> list[Event]:
    update = command.command
    traffic = update.traffic
    if traffic is not None:
        _known(state, traffic, command.deployments)
        total = sum(traffic.values())
        if total not in (0, 100) or any(w > 100 for w in traffic.values()):
            raise InvalidInput(f"traffic must add up to 100 (or all be 0); it adds up to {total}")
        traffic = {name: weight for name, weight in traffic.items() if weight}
    mirror = _mirror(state, command, state.traffic if traffic is None else traffic)
    traffic = None if traffic == state.traffic else traffic
    description = None if update.description == state.description else update.description
    tags = None if update.tags is None or update.tags == state.tags else update.tags
    if traffic is None and description is None and tags is None and mirror is None:
        return []
    return [
        EndpointUpdated(
            endpoint=state.name,
            traffic=traffic,
            description=description,
            tags=tags,
            mirror=mirror,
        )
    ]


def _mirror(
    state: EndpointState, command: ResolvedTraffic, traffic: dict[str, int]
) -> dict[str, int] | None:
    """The mirrored share once the update is applied (None: unchanged). As Azure has it: one
    deployment, at most 50 %, and not one that takes live traffic."""
    wanted = command.command.mirror_traffic
    if wanted is None:
        mirror = state.mirror
    else:
        _known(state, wanted, command.deployments)
        mirror = {name: weight for name, weight in wanted.items() if weight}
        if len(mirror) > 1 or any(w > 50 for w in mirror.values()):
            raise InvalidInput("mirror_traffic names one deployment, with at most 50 percent")
    live = sorted(set(mirror) & set(traffic))
    if live:
        raise InvalidInput(f"deployment {live[0]} takes live traffic: it cannot be mirrored to")
    return None if mirror == state.mirror else mirror


ENDPOINT: Aggregate[EndpointState, EndpointCommand] = Aggregate(
    kind="endpoint",
    initial=EndpointState(),
    evolve=evolve_endpoint,
    decide=decide_endpoint,
    commands=EndpointCommand,
)


# -- deployments -------------------------------------------------------------------------------


class DeploymentStatus(StrEnum):
    CREATING = "Creating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETED = "Deleted"


class PreviousSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a rolling update replaces, kept until it is done: the last spec that had every
    replica ready, its job, its replicas and the attempts they were ready with."""

    spec: DeploymentSpec
    job: JobSpec
    replicas: tuple[str, ...]
    ready: dict[str, int]


class DeploymentState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    endpoint: str = ""
    name: str = ""
    status: DeploymentStatus = DeploymentStatus.CREATING
    spec: DeploymentSpec | None = None
    job: JobSpec | None = None
    experiment_name: str = ""
    #: the runs of the current replicas, and the attempt each last reported ready with
    replicas: tuple[str, ...] = ()
    ready: dict[str, int] = msgspec.field(default_factory=dict)
    #: runs of earlier specs, or scaled away (stopped): the last ``RETIRED_KEPT``
    retired: tuple[str, ...] = ()
    error: str = ""
    #: during a rolling update: what it replaces
    previous: PreviousSpec | None = None
    #: the last update that failed and was rolled back (its reason); "" once a spec rolls out
    update_error: str = ""
    #: scaling decisions so far (the next one's replica ids derive from it), the last one's
    #: time
    scalings: int = 0
    scaled_at: float = 0.0
    #: when the rolling update under way was decided (0: not recorded)
    rolling_since: float = 0.0
    #: replicas replaced so far, those since one was last ready, the last one's time
    replacements: int = 0
    replaced_in_row: int = 0
    replaced_at: float = 0.0

    @property
    def live(self) -> bool:
        return self.exists and self.status != DeploymentStatus.DELETED

    @property
    def serving(self) -> bool:
        """Its spec has had every replica ready: ``Succeeded``, or ``Failed`` by an update
        that was rolled back."""
        return self.status == DeploymentStatus.SUCCEEDED or (
            self.status == DeploymentStatus.FAILED and bool(self.update_error)
        )


def evolve_deployment(state: DeploymentState, event: Event) -> DeploymentState:
    match event:
        case DeploymentCreated() as ev:
            return DeploymentState(
                exists=True,
                endpoint=ev.endpoint,
                name=ev.deployment,
                spec=ev.spec,
                job=ev.job,
                experiment_name=ev.experiment_name,
                replicas=tuple(ev.replicas),
                retired=_kept(state.retired + state.replicas),
                scalings=state.scalings,
                scaled_at=state.scaled_at,
                replacements=state.replacements,
            )
        case DeploymentUpdated() as ev:
            return msgspec.structs.replace(
                state,
                status=DeploymentStatus.CREATING,
                spec=ev.spec,
                job=ev.job,
                replicas=tuple(ev.replicas),
                ready={},
                retired=_kept(state.retired + tuple(ev.retired)),
                error="",
                previous=_previous(state),
                rolling_since=ev.at,
                replaced_in_row=0,
            )
        case ReplicaReady(run_id=run_id, attempt=attempt):
            return _ready(state, run_id, attempt)
        case DeploymentFailed(error=error):
            return msgspec.structs.replace(
                state, status=DeploymentStatus.FAILED, error=error, previous=None
            )
        case DeploymentRolledBack() as ev:
            return _rolled_back(state, ev)
        case DeploymentScaled(added=added, removed=removed, at=at):
            gone = set(removed)
            return msgspec.structs.replace(
                state,
                replicas=tuple(r for r in state.replicas if r not in gone) + tuple(added),
                ready={r: a for r, a in state.ready.items() if r not in gone},
                retired=_kept(state.retired + tuple(removed)),
                scalings=state.scalings + 1,
                scaled_at=at,
            )
        case ReplicaReplaced() as ev:
            return msgspec.structs.replace(
                state,
                replicas=tuple(ev.replacement if r == ev.run_id else r for r in state.replicas),
                ready={r: a for r, a in state.ready.items() if r != ev.run_id},
                retired=_kept((*state.retired, ev.run_id)),
                replacements=state.replacements + 1,
                replaced_in_row=state.replaced_in_row + 1,
                replaced_at=ev.at,
            )
        case DeploymentDeleted():
            return msgspec.structs.replace(
                state,
                status=DeploymentStatus.DELETED,
                retired=_kept(state.retired + state.replicas),
                replicas=(),
                ready={},
                previous=None,
            )
    return state


def _kept(retired: tuple[str, ...]) -> tuple[str, ...]:
    return retired[-RETIRED_KEPT:]


def _previous(state: DeploymentState) -> PreviousSpec | None:
    """What an update of ``state`` replaces: its spec if every replica of it is ready; the
    one an unfinished roll replaces if it is mid-roll; nothing if it never had one working."""
    if state.serving and state.spec and state.job:
        return PreviousSpec(
            spec=state.spec, job=state.job, replicas=state.replicas, ready=dict(state.ready)
        )
    if state.status == DeploymentStatus.CREATING:
        return state.previous
    return None


def _ready(state: DeploymentState, run_id: str, attempt: int) -> DeploymentState:
    ready = {**state.ready, run_id: attempt}
    status, previous, update_error = state.status, state.previous, state.update_error
    if status == DeploymentStatus.CREATING and set(ready) >= set(state.replicas):
        status, previous, update_error = DeploymentStatus.SUCCEEDED, None, ""
    return msgspec.structs.replace(
        state,
        ready=ready,
        status=status,
        previous=previous,
        update_error=update_error,
        replaced_in_row=0,
    )


def replace_after(state: DeploymentState) -> float:
    """When a replacement replica may start: a back-off after the last replacement that
    doubles with each one in a row."""
    if not state.replaced_in_row:
        return 0.0
    delay = min(REPLACE_MOST_S, REPLACE_FIRST_S * 2.0 ** min(state.replaced_in_row - 1, 16))
    return state.replaced_at + delay


def _rolled_back(state: DeploymentState, ev: DeploymentRolledBack) -> DeploymentState:
    previous = state.previous
    if previous is None:  # never appended without one
        return state
    error = f"the update failed and was rolled back: {ev.error}"
    return msgspec.structs.replace(
        state,
        status=DeploymentStatus.FAILED,
        spec=previous.spec,
        job=previous.job,
        replicas=tuple(ev.replicas),
        ready={r: a for r, a in previous.ready.items() if r in ev.replicas},
        retired=_kept(tuple(r for r in state.retired if r not in ev.replicas) + tuple(ev.retired)),
        error=error,
        update_error=ev.error,
        previous=None,
    )


class ResolvedDeploy(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``DeployModel`` with what the service worked out: the replicas' job spec (the
    environment resolved), the run ids of the new replicas and their experiment."""

    command: DeployModel
    job: JobSpec
    replicas: list[str]
    experiment_name: str
    #: when it was decided (the scheduler's clock): an update's roll deadline counts from here
    at: float = 0.0


class RetireDeployment(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``DeleteDeployment``, once the service checked that the endpoint sends it no
    traffic."""

    command: DeleteDeployment


class ReplicaFailed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A replica's failed ``ReportReplica``, with what a roll-back needs (looked up by the
    service): for each replica of the previous spec, the run that takes its place (itself
    while it runs; a new run id for one the roll already stopped); and, for a replica of a
    deployment that serves (a scaled-out or restored one), the run that replaces it and when
    that was decided."""

    command: ReportReplica
    restore: dict[str, str] = msgspec.field(default_factory=dict)
    replacement: str = ""
    at: float = 0.0


class ReplaceReplica(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The scheduler found replica ``run_id`` of a serving deployment ended or stopped while
    the deployment still names it (``error``: how): ``replacement`` takes its place."""

    run_id: str
    replacement: str
    error: str
    at: float


class RollTimedOut(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The scheduler's look at a rolling update at ``at``, under way since ``since``: past the
    spec's ``rollout_timeout_s`` it is rolled back (``restore`` as ``ReplicaFailed``'s)."""

    at: float
    since: float
    restore: dict[str, str] = msgspec.field(default_factory=dict)


class ScaleDeployment(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The autoscaler's decision (the scheduler's, from the replicas' request metrics over
    ``window_s``, at time ``at``): ``replicas`` replicas, was ``replicas_before`` when it
    looked (refused as stale otherwise). New replicas' run ids are ``added`` (as many as
    needed, made by the service); the newest ones are removed. Within ``cooldown_s`` of the
    last change nothing changes."""

    at: float
    cooldown_s: float
    replicas_before: int
    replicas: int
    utilization_pct: float
    target_pct: float
    window_s: float
    requests: int
    added: list[str] = msgspec.field(default_factory=list)


DeploymentCommand = (
    ResolvedDeploy
    | ReportReplica
    | ReplicaFailed
    | ReplaceReplica
    | RollTimedOut
    | RetireDeployment
    | ScaleDeployment
)


def decide_deployment(state: DeploymentState, command: DeploymentCommand) -> list[Event]:
    match command:
        case ResolvedDeploy():
            return _deploy(state, command)
        case ReportReplica():
            return _report(state, command)
        case ReplicaFailed():
            return _failed(state, command)
        case ReplaceReplica():
            return _replace(state, command)
        case RollTimedOut():
            return _timed_out(state, command)
        case ScaleDeployment():
            return _scale(state, command)
        case RetireDeployment(command=delete):
            if not state.exists:
                raise NotFound(f"deployment {delete.deployment} does not exist")
            if not state.live:
                return []
            return [
                DeploymentDeleted(
                    endpoint=state.endpoint,
                    deployment=state.name,
                    replicas=list(state.replicas),
                )
            ]


def _deploy(state: DeploymentState, command: ResolvedDeploy) -> list[Event]:
    deploy = command.command
    if not command.replicas:
        raise InvalidInput("a deployment needs at least one replica")
    if not state.live:
        return [
            DeploymentCreated(
                endpoint=deploy.endpoint,
                deployment=deploy.deployment,
                spec=deploy.spec,
                job=command.job,
                experiment_name=command.experiment_name,
                replicas=command.replicas,
            )
        ]
    if set(command.replicas) & set(state.replicas + state.retired):
        raise AlreadyExists(f"deployment {state.name} already has those replicas")
    return [
        DeploymentUpdated(
            endpoint=state.endpoint,
            deployment=state.name,
            spec=deploy.spec,
            job=command.job,
            replicas=command.replicas,
            retired=list(state.replicas),
            at=command.at,
        )
    ]


def _report(state: DeploymentState, command: ReportReplica) -> list[Event]:
    if not state.live:
        raise InvalidTransition(f"deployment {command.deployment} is not live")
    if command.run_id not in state.replicas:
        raise StaleAttempt(f"run {command.run_id} is no replica of deployment {state.name}")
    if command.phase == "ready":
        if state.ready.get(command.run_id) == command.attempt:
            return []
        return [
            ReplicaReady(
                endpoint=state.endpoint,
                deployment=state.name,
                run_id=command.run_id,
                attempt=command.attempt,
            )
        ]
    if state.status == DeploymentStatus.FAILED:
        return []
    return [
        DeploymentFailed(
            endpoint=state.endpoint,
            deployment=state.name,
            run_id=command.run_id,
            attempt=command.attempt,
            error=command.error,
        )
    ]


def _failed(state: DeploymentState, command: ReplicaFailed) -> list[Event]:
    """A replica could not start. Mid-roll (a previous spec to go back to) the roll stops:
    the previous spec's replicas come back (``restore``) and the new ones are stopped. Once
    the deployment serves (a scaled-out or restored replica), the replica is replaced and the
    status stays."""
    report = command.command
    previous = state.previous
    if state.live and state.serving and report.run_id in state.replicas:
        return _replaced(state, report.run_id, report.attempt, report.error, command)
    if (
        previous is None
        or state.status != DeploymentStatus.CREATING
        or report.run_id not in state.replicas
    ):
        return _report(state, report)
    return [_rollback(state, previous, report.run_id, report.attempt, report.error, command)]


def _rollback(
    state: DeploymentState,
    previous: PreviousSpec,
    run_id: str,
    attempt: int,
    error: str,
    command: ReplicaFailed | RollTimedOut,
) -> DeploymentRolledBack:
    replicas = [command.restore.get(r, r) for r in previous.replicas]
    if set(replicas) & set(state.replicas):
        raise InvalidInput("a restored replica cannot be one of the failed spec's")
    return DeploymentRolledBack(
        endpoint=state.endpoint,
        deployment=state.name,
        run_id=run_id,
        attempt=attempt,
        error=error,
        replicas=replicas,
        retired=list(state.replicas),
    )


def _replaced(
    state: DeploymentState,
    run_id: str,
    attempt: int,
    error: str,
    command: ReplicaFailed | ReplaceReplica,
) -> list[Event]:
    if not command.replacement or command.replacement in {*state.replicas, *state.retired}:
        raise InvalidInput(f"replacing replica {run_id} needs a new run id")
    return [
        ReplicaReplaced(
            endpoint=state.endpoint,
            deployment=state.name,
            run_id=run_id,
            attempt=attempt,
            replacement=command.replacement,
            error=error,
            at=command.at,
        )
    ]


def _replace(state: DeploymentState, command: ReplaceReplica) -> list[Event]:
    """A serving deployment's replica whose run is gone: replaced (nothing when the
    deployment no longer names it or does not serve: a roll or a delete took it)."""
    if not state.live or not state.serving or command.run_id not in state.replicas:
        return []
    return _replaced(state, command.run_id, 0, command.error, command)


def _timed_out(state: DeploymentState, command: RollTimedOut) -> list[Event]:
    """A rolling update with no new replica ready within its deadline is rolled back; one
    with a new replica ready (each ready one stops an old one), or none under way, stays."""
    previous, spec = state.previous, state.spec
    if (
        not state.live
        or previous is None
        or spec is None
        or state.status != DeploymentStatus.CREATING
        or set(state.ready) & set(state.replicas)
        or command.at - command.since < spec.rollout_timeout_s
    ):
        return []
    waiting = [r for r in state.replicas if r not in state.ready]
    error = f"no new replica was ready within {spec.rollout_timeout_s:g} s"
    return [_rollback(state, previous, waiting[0], 0, error, command)]


def _scale(state: DeploymentState, command: ScaleDeployment) -> list[Event]:
    if not state.live or state.spec is None or state.spec.scale is None:
        raise InvalidTransition(f"deployment {state.name} does not autoscale")
    if not state.serving or len(state.replicas) != command.replicas_before:
        raise StaleAttempt(f"deployment {state.name} changed since its load was measured")
    scale = state.spec.scale
    after = max(scale.min_replicas, min(scale.max_replicas, command.replicas))
    before = len(state.replicas)
    if after == before or command.at - state.scaled_at < command.cooldown_s:
        return []
    added = list(command.added[: max(0, after - before)])
    if len(added) != max(0, after - before) or set(added) & set(state.replicas + state.retired):
        raise InvalidInput(f"scaling to {after} replicas needs {after - before} new run ids")
    removed = list(state.replicas[after:]) if after < before else []
    return [
        DeploymentScaled(
            endpoint=state.endpoint,
            deployment=state.name,
            replicas_before=before,
            replicas_after=after,
            utilization_pct=command.utilization_pct,
            target_pct=command.target_pct,
            window_s=command.window_s,
            at=command.at,
            requests=command.requests,
            added=added,
            removed=removed,
        )
    ]


DEPLOYMENT: Aggregate[DeploymentState, DeploymentCommand] = Aggregate(
    kind="deployment",
    initial=DeploymentState(),
    evolve=evolve_deployment,
    decide=decide_deployment,
    commands=DeploymentCommand,
)
