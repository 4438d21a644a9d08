"""Online endpoints: a scoring address with its keys and traffic, and the deployments behind it.

1. ``CreateEndpoint`` (``cairn.cmd.<ws>.endpoint.create``, the scheduler) records
   ``EndpointCreated`` with the sha256 of its two keys (never the keys: the client makes them
   and keeps them as workspace secrets); ``SetEndpointKeys`` replaces one (a regenerated key
   invalidates the old one at once); ``UpdateEndpoint`` sets the traffic weights.
2. ``DeployModel`` (``endpoint.deploy``) records ``DeploymentCreated`` (or
   ``DeploymentUpdated``) on the deployment's own subject and submits one job per replica:
   a run whose ``JobSpec.serve`` makes its agent serve requests for the deployment instead of
   waiting for the process to end. A replica that is lost (its process killed, its agent
   gone) is re-queued by the scheduler as any lost job is.
3. The replica's agent reports ``ReportReplica`` (``replica.report``, agents only): ``ready``
   once the entry script's ``init()`` returned, ``failed`` with the traceback when it raised.
4. Requests travel on ``cairn.serve.<ws>.<endpoint>.<deployment>`` (request/reply, one queue
   group per deployment): the gateway picks a deployment by weight per request
   (``RouteEndpoint`` says the weights once the key is checked) and the replicas' agents
   relay each request to their replica.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cairn.proto._base import Count, Digest, Id, Key, Name, Strict, TagKey, TagValue, Text
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.commands import Command, Query
from cairn.proto.errors import InvalidInput

__all__ = [
    "ENDPOINT_COMMAND_TYPES",
    "ENDPOINT_QUERY_TYPES",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_REPLICAS",
    "MAX_REQUEST_TIMEOUT_S",
    "MAX_ROLLOUT_TIMEOUT_S",
    "CreateEndpoint",
    "DataCollector",
    "DeleteDeployment",
    "DeleteEndpoint",
    "DeployModel",
    "DeploymentName",
    "DeploymentSpec",
    "EndpointName",
    "GetEndpoint",
    "ListEndpoints",
    "ModelRef",
    "ReplicaSpec",
    "ReportReplica",
    "RouteEndpoint",
    "ScaleSettings",
    "SetEndpointKeys",
    "UpdateEndpoint",
    "check_timeouts",
    "deployment_id",
]

#: an endpoint's or a deployment's name: a subject token without ``_`` (which joins the two in
#: a deployment's aggregate id), starting with a letter
EndpointName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{1,31}$")]
DeploymentName = EndpointName
#: the most replicas one deployment may ask for
MAX_REPLICAS = 64
#: the most requests one replica may answer at once (worker threads of its process)
MAX_CONCURRENT_REQUESTS = 1000
MaxConcurrent = Annotated[int, msgspec.Meta(ge=1, le=MAX_CONCURRENT_REQUESTS)]
#: how long a request may wait for a replica's free worker, in seconds
QueueWait = Annotated[float, msgspec.Meta(ge=0, le=600)]
#: the longest ``request_timeout_s`` a deployment may ask for (``endpoint.deploy`` refuses
#: more): an answer goes back under the agent's reply permission, which the server lets
#: expire (``cairn.embedded._auth.ANSWER_EXPIRES_S`` covers this), and each request holds an
#: entry of that permission until it does (docs/security.md)
MAX_REQUEST_TIMEOUT_S = 300.0
#: the longest ``rollout_timeout_s``
MAX_ROLLOUT_TIMEOUT_S = 86400


def check_timeouts(*, request_timeout_s: float, rollout_timeout_s: float, where: str = "") -> None:
    """``InvalidInput`` naming the one of a deployment's timeouts (in seconds) out of its
    range: ``request_timeout_s`` within (0, :data:`MAX_REQUEST_TIMEOUT_S`],
    ``rollout_timeout_s`` within (0, :data:`MAX_ROLLOUT_TIMEOUT_S`]. ``where``: what comes
    before the value's name (a file and ``": "``); each value is named for itself."""
    for name, value, most in (
        ("request_timeout_s", request_timeout_s, MAX_REQUEST_TIMEOUT_S),
        ("rollout_timeout_s", rollout_timeout_s, MAX_ROLLOUT_TIMEOUT_S),
    ):
        if not 0 < value <= most:  # NaN too
            raise InvalidInput(
                f"{where}{name} must be within (0, {most:g}] seconds: {value:g} given"
            )


def deployment_id(endpoint: str, deployment: str) -> str:
    """The deployment aggregate's id: ``<endpoint>_<deployment>`` (names hold no ``_``)."""
    return f"{endpoint}_{deployment}"


class ModelRef(Strict, frozen=True, kw_only=True):
    """A registered model version a deployment serves."""

    name: Name
    version: Count


class DataCollector(Strict, frozen=True, kw_only=True):
    """What a deployment's replicas collect of their requests (``data_collector`` of a v2
    deployment file): each sampled request's body (``model_inputs``) and/or its answer
    (``model_outputs``), as JSON lines appended to files under
    ``modelDataCollector/<endpoint>/<deployment>/<collection>/<yyyy>/<mm>/<dd>/<hh>/`` (one
    file per replica) in ``datastore``, the workspace's default datastore when deployed.
    ``rolling_rate``: how often a replica starts a new file (``day`` drops the hour's folder,
    ``minute`` adds one for the minute). ``sampling_rate``: the share of requests collected,
    chosen by the request's id (the same id is always chosen, or never)."""

    datastore: Name
    collections: Annotated[
        list[Literal["model_inputs", "model_outputs"]], msgspec.Meta(min_length=1, max_length=2)
    ]
    sampling_rate: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    rolling_rate: Literal["minute", "hour", "day"] = "hour"


class ReplicaSpec(Strict, frozen=True, kw_only=True):
    """What makes a job a serving replica (``JobSpec.serve``): its agent starts the entry
    script's ``init()`` once and relays the deployment's requests to its ``run()``."""

    endpoint: EndpointName
    deployment: DeploymentName
    entry_script: Text
    models: list[ModelRef] = msgspec.field(default_factory=list)
    #: how long one ``run()`` may take before the caller is answered 504
    request_timeout_s: float = 60.0
    #: ``run()`` calls the replica makes at once, each in a worker thread (Azure's
    #: ``max_concurrent_requests_per_instance``); as many more wait, beyond that 429
    max_concurrent_requests: MaxConcurrent = 1
    #: how long a request may wait for a free worker before it is answered 503 (Azure v1's
    #: ``max_request_wait_time``, v2's ``max_queue_wait_ms``)
    max_queue_wait_s: QueueWait = 0.5
    #: what the replica collects of its requests (None: nothing)
    data_collector: DataCollector | None = None


class ScaleSettings(Strict, frozen=True, kw_only=True):
    """Autoscaling (Azure's ``scale_settings: {type: target_utilization}``, and v1's
    ``autoscale_*``): every ``polling_interval_s`` the scheduler compares the replicas'
    utilisation (requests in flight per replica, in percent of the
    ``max_concurrent_requests`` a replica runs at once) with ``target_utilization_pct`` and
    sets the replica count within ``[min_replicas, max_replicas]``; after a change it waits
    ``cooldown_s`` before the next."""

    min_replicas: Count = 1
    max_replicas: Count = 10
    polling_interval_s: Annotated[float, msgspec.Meta(ge=0.5, le=3600)] = 1.0
    target_utilization_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] = 70.0
    #: after a change, how long no other is made (None: three polling intervals, at least
    #: the length of the window the utilisation is measured over)
    cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] | None = None


class DeploymentSpec(Strict, frozen=True, kw_only=True):
    """A deployment as its client describes it: the models, the entry script in the source
    snapshot (committed in a staging area, as a job's), the environment (registered by name,
    or inline), the compute target its replicas run on and how many.

    ``cpu_cores`` and ``memory_gb`` are what each replica asks for; they are recorded and
    shown, and an agent takes a replica only into a free slot (one replica, one slot)."""

    models: list[ModelRef] = msgspec.field(default_factory=list)
    entry_script: Text
    snapshot: Digest | None = None
    snapshot_area: Id | None = None
    environment_name: Name | None = None
    environment_version: Count | None = None
    environment: EnvironmentSpec | None = None
    compute: Key = "local"
    replicas: Count = 1
    cpu_cores: float | None = None
    memory_gb: float | None = None
    env_vars: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    request_timeout_s: float = 60.0
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: :attr:`ReplicaSpec.max_concurrent_requests`, per replica
    max_concurrent_requests: MaxConcurrent = 1
    #: :attr:`ReplicaSpec.max_queue_wait_s`
    max_queue_wait_s: QueueWait = 0.5
    #: autoscaling (None: ``replicas`` replicas, always); ``replicas`` is then the count it
    #: starts with
    scale: ScaleSettings | None = None
    #: what its replicas collect of their requests (None: nothing)
    data_collector: DataCollector | None = None
    #: how long a rolling update to this spec may take: no new replica ready within it, the
    #: deployment is rolled back to its previous spec (Kubernetes' progressDeadlineSeconds)
    rollout_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_ROLLOUT_TIMEOUT_S)] = 1800.0


class CreateEndpoint(Command, frozen=True, kw_only=True, tag=True):
    """A new endpoint with the sha256 digests of its primary and secondary keys."""

    VERB = "endpoint.create"
    endpoint: EndpointName
    key_hashes: list[Digest]
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class UpdateEndpoint(Command, frozen=True, kw_only=True, tag=True):
    """Set the traffic (``{deployment: percent}``, summing to 100, or all 0), the
    description or the tags; what is None stays. ``mirror_traffic`` (``{deployment:
    percent}``, one deployment, at most 50, one without live traffic; ``{}``: none): that
    share of requests is also sent to it, its answers dropped."""

    VERB = "endpoint.update"
    endpoint: EndpointName
    traffic: dict[DeploymentName, Count] | None = None
    description: Text | None = None
    tags: dict[TagKey, TagValue] | None = None
    mirror_traffic: dict[DeploymentName, Count] | None = None


class SetEndpointKeys(Command, frozen=True, kw_only=True, tag=True):
    """Replace the key in ``slot`` by the one whose digest is ``key_hash`` (the old key stops
    working at once)."""

    VERB = "endpoint.keys"
    endpoint: EndpointName
    slot: Literal["primary", "secondary"]
    key_hash: Digest


class DeleteEndpoint(Command, frozen=True, kw_only=True, tag=True):
    """Delete the endpoint and every deployment under it (their replicas are stopped)."""

    VERB = "endpoint.delete"
    endpoint: EndpointName


class DeployModel(Command, frozen=True, kw_only=True, tag=True):
    """Create deployment ``deployment`` under ``endpoint``, or replace its spec (its replicas
    are replaced). ``all_traffic``: then send the endpoint's whole traffic to it."""

    VERB = "endpoint.deploy"
    endpoint: EndpointName
    deployment: DeploymentName
    spec: DeploymentSpec
    all_traffic: bool = False


class DeleteDeployment(Command, frozen=True, kw_only=True, tag=True):
    """Stop a deployment's replicas and delete it; refused while it has traffic."""

    VERB = "endpoint.undeploy"
    endpoint: EndpointName
    deployment: DeploymentName


class ReportReplica(Command, frozen=True, kw_only=True, tag=True):
    """A replica's agent says how its start went: ``ready`` (``init()`` returned; the agent
    now takes the deployment's requests for it) or ``failed`` (``error``: the traceback)."""

    VERB = "replica.report"
    endpoint: EndpointName
    deployment: DeploymentName
    run_id: Id
    attempt: Count
    phase: Literal["ready", "failed"]
    error: Text = ""


class GetEndpoint(Query, frozen=True, kw_only=True, tag=True):
    """An endpoint with its traffic and its deployments (their replicas and state); never a
    key."""

    NAME = "endpoint.get"
    endpoint: EndpointName


class ListEndpoints(Query, frozen=True, kw_only=True, tag=True):
    NAME = "endpoint.list"


class RouteEndpoint(Query, frozen=True, kw_only=True, tag=True):
    """The traffic weights a request may be routed by. From outside the people's account (the
    gateway's scoring user) it needs ``key``, one of the endpoint's keys; a member of the
    workspace asks without one."""

    NAME = "endpoint.route"
    endpoint: EndpointName
    key: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    #: the caller names the deployment (``azureml-model-deployment``): its time limit is in
    #: the answer whatever its traffic (``NotFound`` when it is not live)
    deployment: DeploymentName | None = None


ENDPOINT_COMMAND_TYPES: tuple[type[Command], ...] = (
    CreateEndpoint,
    UpdateEndpoint,
    SetEndpointKeys,
    DeleteEndpoint,
    DeployModel,
    DeleteDeployment,
    ReportReplica,
)
ENDPOINT_QUERY_TYPES: tuple[type[Query], ...] = (GetEndpoint, ListEndpoints, RouteEndpoint)
