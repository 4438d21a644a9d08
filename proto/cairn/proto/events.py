"""Domain events and their envelope.

An event is appended once and never changed. On the wire it is JSON::

    {"event_id": ..., "type": "RunStarted", "schema_version": 1, "workspace": "ws",
     "aggregate_kind": "run", "aggregate_id": "r1", "timestamp": "2026-...Z",
     "actor": "alice", "causation_id": "<command id>", "correlation_id": "...",
     "data": {...}}

``type`` names the event class and ``schema_version`` its shape; stored events of an older
shape are upcast (:data:`UPCASTERS`) before they are decoded, so old history stays readable.
A shape may grow by appending fields with defaults without a new version.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from cairn.proto._base import Checked, Count, Digest, Id, Key, Name, TagKey, TagValue, Text
from cairn.proto.assets import AssetSpec, DataFile
from cairn.proto.batch import BatchDeploymentSpec
from cairn.proto.errors import UnknownMessageType
from cairn.proto.jobs import JobSpec, ScheduledBy
from cairn.proto.members import Role
from cairn.proto.parallel import FailureLimits
from cairn.proto.pipelines import PipelineSpec, SubmitPipeline
from cairn.proto.schedules import CatchUp, Submission, Trigger
from cairn.proto.secrets import SecretName
from cairn.proto.serving import DeploymentSpec
from cairn.proto.sweeps import ParameterValue, SweepSpec, TrialTemplate

__all__ = [
    "EVENT_TYPES",
    "UPCASTERS",
    "ArtifactCommitted",
    "AssetDeleted",
    "AssetRegistered",
    "BatchDeploymentSet",
    "BatchEndpointCreated",
    "ChainCheckpointed",
    "ChainEntry",
    "DatastoreCredentialsResealed",
    "DatastoreFilesUploaded",
    "DefaultDatastoreSet",
    "DeploymentCreated",
    "DeploymentDeleted",
    "DeploymentFailed",
    "DeploymentRolledBack",
    "DeploymentScaled",
    "DeploymentUpdated",
    "EndpointCreated",
    "EndpointDeleted",
    "EndpointKeysSet",
    "EndpointUpdated",
    "Envelope",
    "Event",
    "ExperimentArchived",
    "ExperimentCreated",
    "ExperimentRestored",
    "MemberAdded",
    "MemberRemoved",
    "MemberRolesChanged",
    "MiniBatchCommitted",
    "MiniBatchLeased",
    "MiniBatchesPrepared",
    "ModelAliasSet",
    "ModelFile",
    "ModelVersionArchived",
    "ModelVersionRegistered",
    "ModelVersionRestored",
    "ParallelRunAborted",
    "PipelineEnded",
    "PipelineEndpointSet",
    "PipelinePublished",
    "PipelineStepEnded",
    "PipelineStepReused",
    "PipelineStepStarted",
    "PipelineSubmitted",
    "ReplicaReady",
    "ReplicaReplaced",
    "RunAssigned",
    "RunCancelRequested",
    "RunCanceled",
    "RunCompleted",
    "RunCreated",
    "RunFailed",
    "RunPropertiesAdded",
    "RunRequeued",
    "RunStarted",
    "RunSubmitted",
    "RunTagsSet",
    "ScheduleCreated",
    "ScheduleDeleted",
    "ScheduleDisabled",
    "ScheduleEnabled",
    "ScheduleFireFailed",
    "ScheduleFired",
    "ScheduleSkipped",
    "ScheduleUpdated",
    "SecretDeleted",
    "SecretRead",
    "SecretResealed",
    "SecretSet",
    "SweepCancelRequested",
    "SweepEnded",
    "SweepSubmitted",
    "TrialEnded",
    "TrialProposed",
    "TrialStopped",
    "WebhookCreated",
    "WebhookDeadLettered",
    "WebhookDeleted",
    "WebhookSecretResealed",
    "WorkspaceCreated",
    "WorkspaceKeyRotated",
    "decode_envelope",
    "encode_envelope",
]

D = TypeVar("D")


class Envelope(msgspec.Struct, Generic[D], frozen=True, kw_only=True):
    event_id: Id
    type: str
    schema_version: int
    workspace: Id
    aggregate_kind: Id
    aggregate_id: Id
    timestamp: datetime
    actor: str
    causation_id: str
    correlation_id: str
    data: D


class Event(Checked, frozen=True, kw_only=True):
    """Base of every domain event: past tense, frozen, versioned by ``VERSION``. Its names and
    tag keys are checked for control characters when it is built and when it is read."""

    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = ""


class WorkspaceCreated(Event, frozen=True, kw_only=True):
    KIND = "workspace"
    name: Id
    description: Text = ""


class MemberAdded(Event, frozen=True, kw_only=True):
    """``user`` is a member of the workspace with ``roles`` there (the workspace's creator
    is its first member, in the batch of its ``WorkspaceCreated``)."""

    KIND = "workspace"
    user: Id
    roles: list[Role]


class MemberRolesChanged(Event, frozen=True, kw_only=True):
    """Member ``user`` has ``roles`` in the workspace now, instead of the ones before."""

    KIND = "workspace"
    user: Id
    roles: list[Role]


class MemberRemoved(Event, frozen=True, kw_only=True):
    KIND = "workspace"
    user: Id


class ExperimentCreated(Event, frozen=True, kw_only=True):
    KIND = "experiment"
    experiment_id: Id
    name: Name


class DefaultDatastoreSet(Event, frozen=True, kw_only=True):
    KIND = "workspace"
    datastore: Id


class ExperimentArchived(Event, frozen=True, kw_only=True):
    """Hidden from experiment lists unless archived ones are asked for; its runs stay."""

    KIND = "experiment"


class ExperimentRestored(Event, frozen=True, kw_only=True):
    KIND = "experiment"


class RunCreated(Event, frozen=True, kw_only=True):
    """A run exists and is NotStarted."""

    KIND = "run"
    run_id: Id
    experiment_id: Id
    experiment_name: Name
    display_name: Name | None = None
    parent_run_id: Id | None = None
    #: the process manager that drives the run (``sweep``): it starts and ends the run, and
    #: no heartbeat of a script's process is expected from it
    controller: Id | None = None


class RunStarted(Event, frozen=True, kw_only=True):
    """``attempt`` is the job attempt whose process started (0: a run logged interactively)."""

    KIND = "run"
    run_id: Id
    attempt: int = 0


class RunCompleted(Event, frozen=True, kw_only=True):
    KIND = "run"
    run_id: Id
    attempt: int = 0


class RunFailed(Event, frozen=True, kw_only=True):
    KIND = "run"
    run_id: Id
    error: Text = ""
    attempt: int = 0
    exit_code: int | None = None


class RunCanceled(Event, frozen=True, kw_only=True):
    KIND = "run"
    run_id: Id
    reason: Text = ""
    attempt: int = 0


class RunSubmitted(Event, frozen=True, kw_only=True):
    """The run is a job queued on ``compute`` (queue number 1).

    A submission is one fact and one message: the event also creates the run, naming its
    experiment, display name and tags (an atomic batch of several events costs the server
    several times one append). A submission recorded before these fields existed has no
    ``experiment_id`` and follows the run's ``RunCreated`` in the same batch."""

    KIND = "run"
    run_id: Id
    compute: Id
    job: JobSpec
    experiment_id: Id | None = None
    experiment_name: Name | None = None
    display_name: Name | None = None
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: the schedule fire that submitted it
    scheduled: ScheduledBy | None = None
    #: the run this one is a child of (a pipeline's step, a sweep's trial)
    parent_run_id: Id | None = None


class RunAssigned(Event, frozen=True, kw_only=True):
    """Attempt ``attempt`` of the run belongs to ``agent_id``; every earlier attempt is void.
    ``lease_s``: how long the agent may stay silent before the run is taken back."""

    KIND = "run"
    run_id: Id
    attempt: int
    queue_n: int
    agent_id: Id
    lease_s: float


class RunRequeued(Event, frozen=True, kw_only=True):
    """Attempt ``attempt`` was lost (its agent went silent or could not run it); the run is
    queued again under the next queue number, not before ``delay_s`` has passed.

    Version 2 added ``backoff_reset`` (version 1 is read as ``False``: no reset)."""

    VERSION = 2
    KIND = "run"
    run_id: Id
    attempt: int
    reason: Text
    delay_s: float = 0.0
    #: the lost attempt had run (a serving replica: been ready) for a stable period: its
    #: back-off starts over, as after a first loss
    backoff_reset: bool = False


class RunCancelRequested(Event, frozen=True, kw_only=True):
    """The run's agent is asked to stop it; ``RunCanceled`` (or ``RunFailed`` for a timeout)
    follows when it has."""

    KIND = "run"
    run_id: Id
    reason: Text = ""


class RunTagsSet(Event, frozen=True, kw_only=True):
    """Tags are mutable labels: a later value for a key replaces the earlier one."""

    KIND = "run"
    run_id: Id
    tags: dict[TagKey, TagValue]


class RunPropertiesAdded(Event, frozen=True, kw_only=True):
    """Properties are write-once facts about a run (a key, once set, keeps its value)."""

    KIND = "run"
    run_id: Id
    properties: dict[TagKey, TagValue]


class ArtifactCommitted(Event, frozen=True, kw_only=True):
    """A run file: ``path`` inside the run, the SHA-256 of its bytes in the artifact store."""

    KIND = "run"
    run_id: Id
    path: Text
    digest: Digest
    size: int


class ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    path: Text
    digest: Digest
    size: int


class ModelVersionRegistered(Event, frozen=True, kw_only=True):
    """Version ``version`` of model ``name``: the run (or staging) files it was made from, as
    the artifact service committed them."""

    KIND = "model"
    name: Name
    version: int
    files: list[ModelFile]
    source_run_id: Id | None = None
    source_path: Text = ""
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    properties: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    framework: Name | None = None
    framework_version: Name | None = None
    datasets: list[Text] = msgspec.field(default_factory=list)
    environment: Text | None = None


class ModelAliasSet(Event, frozen=True, kw_only=True):
    """``alias`` now points at ``version`` (moved from wherever it pointed before)."""

    KIND = "model"
    alias: Id
    version: int


class ModelVersionArchived(Event, frozen=True, kw_only=True):
    KIND = "model"
    version: int


class ModelVersionRestored(Event, frozen=True, kw_only=True):
    KIND = "model"
    version: int


class AssetRegistered(Event, frozen=True, kw_only=True):
    """Version ``version`` of an environment, datastore or compute target (the aggregate kind
    says which); ``spec_hash`` is the SHA-256 of the normalised spec."""

    KIND = "asset"
    name: Name
    version: int
    spec: AssetSpec
    spec_hash: str
    description: Text = ""
    #: a dataset version's tags
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class AssetDeleted(Event, frozen=True, kw_only=True):
    KIND = "asset"
    name: Name


class DatastoreFilesUploaded(Event, frozen=True, kw_only=True):
    """Files a client wrote into the datastore ``name``: who wrote which bytes where."""

    KIND = "asset"
    name: Id
    files: list[DataFile]


class DatastoreCredentialsResealed(Event, frozen=True, kw_only=True):
    """Version ``version``'s sealed credentials, sealed again under workspace key ``key_id``
    (a key rotation): the same credentials, a new token; the spec is otherwise unchanged."""

    KIND = "asset"
    name: Name
    version: int
    sealed_credentials: str
    key_id: Id


class SecretSet(Event, frozen=True, kw_only=True):
    """Version ``version`` of secret ``name``: its value sealed under workspace key
    ``key_id`` (a Fernet token; never the value)."""

    KIND = "secret"
    name: SecretName
    version: int
    sealed: str
    key_id: Id


class SecretResealed(Event, frozen=True, kw_only=True):
    """Version ``version``'s value sealed again under workspace key ``key_id`` (a key
    rotation): the same value, a new token."""

    KIND = "secret"
    name: SecretName
    version: int
    sealed: str
    key_id: Id


class SecretDeleted(Event, frozen=True, kw_only=True):
    KIND = "secret"
    name: SecretName


class SecretRead(Event, frozen=True, kw_only=True):
    """``reader`` (the attested actor of the request) was given version ``version`` of secret
    ``name``, from run ``run_id`` when a run read it. Never the value."""

    KIND = "secret"
    name: SecretName
    version: int
    reader: str
    run_id: Id | None = None


class WorkspaceKeyRotated(Event, frozen=True, kw_only=True):
    """Key ``key_id`` became the workspace's current key (key ids only, never keys);
    ``resealed`` secrets and datastore versions were sealed again under it, and the keys
    ``dropped`` were deleted (none while ``keep_old_keys``)."""

    KIND = "keyring"
    key_id: Id
    previous: list[Id] = msgspec.field(default_factory=list)
    dropped: list[Id] = msgspec.field(default_factory=list)
    resealed_secrets: int = 0
    resealed_datastores: int = 0


class ScheduleCreated(Event, frozen=True, kw_only=True):
    """Schedule ``name`` exists (again: ``incarnation`` counts its creations) since ``at``
    (seconds since the epoch); ``submission`` is what each fire submits, its environment
    pinned. Events of EVENTS up to sequence ``events_seq`` (its last one when the creation
    was decided) are older than the schedule and trigger nothing (0: recorded before this
    was kept; ``at`` is compared with the event's time instead)."""

    KIND = "schedule"
    name: Name
    incarnation: int
    trigger: Trigger
    submission: Submission
    catch_up: CatchUp = "once"
    display_name: Name | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    enabled: bool = True
    at: float
    events_seq: int = 0


class ScheduleUpdated(Event, frozen=True, kw_only=True):
    """The schedule's definition as it is from ``at`` on (every field, changed or not); due
    times count from ``at``."""

    KIND = "schedule"
    trigger: Trigger
    submission: Submission
    catch_up: CatchUp = "once"
    display_name: Name | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    at: float


class ScheduleDisabled(Event, frozen=True, kw_only=True):
    KIND = "schedule"
    at: float


class ScheduleEnabled(Event, frozen=True, kw_only=True):
    """Enabled again; due times count from ``at``."""

    KIND = "schedule"
    at: float


class ScheduleDeleted(Event, frozen=True, kw_only=True):
    KIND = "schedule"
    at: float


class ScheduleFired(Event, frozen=True, kw_only=True):
    """The schedule fired for due time ``due`` (an event trigger: the event's time and
    ``event_seq``) and submits run ``run_id``. ``covers`` counts the due times this fire
    stands for: more than one when it catches up on fires missed while no service ran."""

    KIND = "schedule"
    due: float
    run_id: Id
    covers: int = 1
    event_seq: int | None = None
    at: float


class ScheduleSkipped(Event, frozen=True, kw_only=True):
    """``count`` due times from ``first_due`` to ``last_due`` were missed and, by the
    schedule's ``catch_up: skip``, not run."""

    KIND = "schedule"
    first_due: float
    last_due: float
    count: int
    at: float


class ScheduleFireFailed(Event, frozen=True, kw_only=True):
    """The fire of ``due`` could not submit its run: the submission was refused with
    ``error`` (a deleted compute target, a dataset gone). It is not tried again."""

    KIND = "schedule"
    due: float
    run_id: Id
    error: Text


class PipelineSubmitted(Event, frozen=True, kw_only=True):
    """Pipeline run ``run_id`` of experiment ``experiment_name``, with its steps."""

    KIND = "pipeline"
    run_id: Id
    experiment_id: Id
    experiment_name: Name
    pipeline: PipelineSpec
    display_name: Name | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: the schedule's fire that submitted it (checked against the schedule's log)
    scheduled: ScheduledBy | None = None


class PipelineStepStarted(Event, frozen=True, kw_only=True):
    """Step ``step`` runs as child run ``run_id`` (submitted as a job); ``reuse_key`` is the
    digest of what it consumes ("" when it may not be reused)."""

    KIND = "pipeline"
    step: Id
    run_id: Id
    reuse_key: str = ""


class PipelineStepReused(Event, frozen=True, kw_only=True):
    """Step ``step`` is child run ``run_id``, which stands for the completed run
    ``reused_run_id`` (its outputs are that run's): ``reason`` says why."""

    KIND = "pipeline"
    step: Id
    run_id: Id
    reused_run_id: Id
    reuse_key: str
    reason: Text = ""


class PipelineStepEnded(Event, frozen=True, kw_only=True):
    """Step ``step`` ended: ``Completed``, ``Failed``, ``Canceled``, or ``Skipped`` (it never
    started: an upstream step failed, or the pipeline ended first)."""

    KIND = "pipeline"
    step: Id
    status: Literal["Completed", "Failed", "Canceled", "Skipped"]
    run_id: Id | None = None
    error: Text = ""
    #: the key a later run of the same step may reuse this one under ("" : none)
    reuse_key: str = ""


class PipelineEnded(Event, frozen=True, kw_only=True):
    KIND = "pipeline"
    status: Literal["Completed", "Failed", "Canceled"]
    error: Text = ""


class PipelinePublished(Event, frozen=True, kw_only=True):
    """Published pipeline ``pipeline_id``: a stored ``SubmitPipeline`` and its parameters'
    defaults (``${{parameters.<name>}}`` in its steps' commands)."""

    KIND = "published_pipeline"
    pipeline_id: Id
    name: Name
    version: Name | None = None
    description: Text = ""
    parameters: dict[Id, Text] = msgspec.field(default_factory=dict)
    submission: SubmitPipeline


class PipelineEndpointSet(Event, frozen=True, kw_only=True):
    """Published pipeline ``pipeline_id`` added to endpoint ``name`` (``default``: the one
    the endpoint runs from now on)."""

    KIND = "pipeline_endpoint"
    name: Name
    pipeline_id: Id
    default: bool
    description: Text = ""


class MiniBatchesPrepared(Event, frozen=True, kw_only=True):
    """Parallel run ``parallel_id`` (step ``step`` of pipeline run ``pipeline_run_id``)
    splits its input of ``items`` items into mini-batches starting at ``starts``;
    ``digest`` names the items; ``limits`` say when it is aborted."""

    KIND = "parallel"
    parallel_id: Id
    pipeline_run_id: Id
    step: Id
    kind: Literal["tabular", "file"]
    items: Count
    starts: list[Count]
    digest: Text
    limits: FailureLimits = msgspec.field(default_factory=FailureLimits)


class MiniBatchLeased(Event, frozen=True, kw_only=True):
    """Mini-batch ``batch`` is worked on by attempt ``attempt`` of worker run ``run_id``
    (its ``delivery``-th lease): until that attempt ends, no one else takes it."""

    KIND = "parallel"
    batch: Count
    run_id: Id
    attempt: Count
    delivery: Count = 1


class MiniBatchCommitted(Event, frozen=True, kw_only=True):
    """Mini-batch ``batch``'s result, committed once: its rows, its failed items and why."""

    KIND = "parallel"
    batch: Count
    run_id: Id
    attempt: Count
    rows: list[str] = msgspec.field(default_factory=list)
    failed_items: Count = 0
    error: Text = ""


class ParallelRunAborted(Event, frozen=True, kw_only=True):
    """Failures passed a limit: no mini-batch is handed out any more."""

    KIND = "parallel"
    reason: Text


class BatchEndpointCreated(Event, frozen=True, kw_only=True):
    """Batch endpoint ``name``: each invocation a pipeline run of its default deployment (or
    the one named)."""

    KIND = "batch_endpoint"
    name: Name
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class BatchDeploymentSet(Event, frozen=True, kw_only=True):
    """Deployment ``name`` of batch endpoint ``endpoint`` runs ``spec`` from now on
    (``default``: the endpoint's default deployment from now on)."""

    KIND = "batch_endpoint"
    endpoint: Name
    name: Id
    spec: BatchDeploymentSpec
    default: bool = False


class WebhookCreated(Event, frozen=True, kw_only=True):
    """Webhook ``webhook_id`` delivers the workspace's events of ``event_types`` (matching
    every ``filters`` entry) to ``url``, signed with a secret sealed under workspace key
    ``key_id`` (a Fernet token; never the secret)."""

    KIND = "webhook"
    webhook_id: Id
    url: Text
    event_types: list[str]
    filters: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    description: Text = ""
    sealed_secret: str
    key_id: Id


class WebhookDeleted(Event, frozen=True, kw_only=True):
    KIND = "webhook"
    webhook_id: Id


class WebhookSecretResealed(Event, frozen=True, kw_only=True):
    """The webhook's signing secret sealed again under workspace key ``key_id`` (a key
    rotation): the same secret, a new token."""

    KIND = "webhook"
    webhook_id: Id
    sealed_secret: str
    key_id: Id


class WebhookDeadLettered(Event, frozen=True, kw_only=True):
    """Delivery ``delivery_id`` (of the event at stream sequence ``event_seq``) failed
    ``attempts`` times and was given up: the last answer's HTTP ``status`` (None: no answer)
    and what went wrong. Never the receiver's response body."""

    KIND = "webhook"
    webhook_id: Id
    delivery_id: Id
    event_seq: int
    event_id: Id
    event_type: str
    attempts: int
    status: int | None = None
    error: Text = ""


class SweepSubmitted(Event, frozen=True, kw_only=True):
    """Sweep ``run_id`` (also its parent run's id) over ``spec``, its trials submitted as
    ``trial`` says; ``seed`` is the sampler's seed (the one given, or one drawn at
    submission), so every proposal can be made again from the sweep's events."""

    KIND = "sweep"
    run_id: Id
    experiment_name: Name
    spec: SweepSpec
    trial: TrialTemplate
    seed: int


class TrialProposed(Event, frozen=True, kw_only=True):
    """Trial ``index`` (run ``run_id``) will run with ``parameters``. ``sampled`` is what the
    sampler drew (before a distribution's transform: ``loguniform``'s exponent, ``normal``'s
    quantile), ``seen`` the indices of the trials whose results the sampler was given: the
    proposal is a function of the seed, the earlier proposals and those results alone."""

    KIND = "sweep"
    index: int
    run_id: Id
    parameters: dict[Key, ParameterValue]
    sampled: dict[Key, ParameterValue]
    seen: list[int] = msgspec.field(default_factory=list)


class TrialStopped(Event, frozen=True, kw_only=True):
    """The policy stopped trial ``index`` at its ``interval``-th report of the primary metric:
    ``value`` (the trial's number there) against ``threshold`` (from ``reference``: the best
    value at that interval for a bandit policy, the median of running averages, the cut-off of
    a truncation), with ``reason`` in words."""

    KIND = "sweep"
    index: int
    policy: Id
    interval: int
    value: float
    reference: float
    threshold: float
    reason: Text


class TrialEnded(Event, frozen=True, kw_only=True):
    """Trial ``index``'s run ended ``status``; ``best`` and ``last`` are its primary metric
    (None: never logged), ``reports`` how many values it logged."""

    KIND = "sweep"
    index: int
    status: Id
    best: float | None = None
    last: float | None = None
    reports: int = 0
    #: why a trial failed, when its run never ran (its submission was refused)
    error: Text = ""


class SweepCancelRequested(Event, frozen=True, kw_only=True):
    KIND = "sweep"
    reason: Text = ""


class SweepEnded(Event, frozen=True, kw_only=True):
    """``Completed``, ``Failed`` (``error`` says why: no trial logged the primary metric, the
    timeout) or ``Canceled``; ``best_index`` is the best trial (None: none had a result)."""

    KIND = "sweep"
    status: Id
    error: Text = ""
    best_index: int | None = None


#: a SHA-256 as 64 lowercase hex digits (event digests and chain hashes of the audit chain)
HexDigest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class ChainEntry(msgspec.Struct, frozen=True, array_like=True):
    """One event of a checkpoint's window: its stream sequence, its digest
    (``cairn.audit.event_digest``) and its subject after ``cairn.ev.<ws>.`` (``<kind>.<id>``),
    so that a deleted event can be named. On the wire a 3-element array."""

    seq: Count
    digest: HexDigest
    subject: Annotated[str, msgspec.Meta(max_length=200)]


class ChainCheckpointed(Event, frozen=True, kw_only=True):
    """The audit service's signed checkpoint number ``index`` of workspace ``workspace``'s
    hash chain (docs/design.md, *Tamper evidence*): the workspace's events with stream
    sequences ``from_seq``..``up_to_seq`` are exactly ``events``, in that order; the chain,
    ``prev_chain`` at the previous checkpoint's end (64 zeros before the first), is ``chain``
    after them. ``signature`` is Ed25519 by key ``key_id`` over the canonical bytes of all
    the other fields (``cairn.audit.signed_bytes``)."""

    KIND = "audit"
    workspace: Id
    index: Count
    from_seq: Count
    up_to_seq: Count
    prev_chain: HexDigest
    chain: HexDigest
    events: list[ChainEntry]
    key_id: Id
    signature: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{128}$")]


class EndpointCreated(Event, frozen=True, kw_only=True):
    """An online endpoint, with the sha256 digests of its two keys (never the keys)."""

    KIND = "endpoint"
    endpoint: Id
    key_hashes: list[Digest]
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class EndpointUpdated(Event, frozen=True, kw_only=True):
    """What changed: the traffic weights (``{deployment: percent}``), description, tags, the
    mirrored share (``{deployment: percent}``; ``{}``: none)."""

    KIND = "endpoint"
    endpoint: Id
    traffic: dict[Id, int] | None = None
    description: Text | None = None
    tags: dict[TagKey, TagValue] | None = None
    mirror: dict[Id, int] | None = None


class EndpointKeysSet(Event, frozen=True, kw_only=True):
    """The digests of the endpoint's keys from now on (a replaced key stops working)."""

    KIND = "endpoint"
    endpoint: Id
    key_hashes: list[Digest]


class EndpointDeleted(Event, frozen=True, kw_only=True):
    KIND = "endpoint"
    endpoint: Id


class DeploymentCreated(Event, frozen=True, kw_only=True):
    """A deployment and the runs of its replicas (each a job with ``JobSpec.serve``), in the
    experiment ``experiment_name``; ``job`` is the replicas' spec with the environment
    resolved."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    spec: DeploymentSpec
    job: JobSpec
    experiment_name: Name
    replicas: list[Id]


class DeploymentUpdated(Event, frozen=True, kw_only=True):
    """A new spec: ``replicas`` replace ``retired`` (whose runs are stopped)."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    spec: DeploymentSpec
    job: JobSpec
    replicas: list[Id]
    retired: list[Id] = msgspec.field(default_factory=list)
    #: when it was decided (the scheduler's clock): a roll's deadline counts from here (0: not
    #: recorded, before this field; the deadline then counts from the first look at it)
    at: float = 0.0


class ReplicaReady(Event, frozen=True, kw_only=True):
    """Attempt ``attempt`` of replica ``run_id`` ran ``init()`` and takes requests."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    run_id: Id
    attempt: int


class DeploymentFailed(Event, frozen=True, kw_only=True):
    """A replica's ``init()`` raised: ``error`` is what it printed (its traceback)."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    run_id: Id
    attempt: int
    error: Text


class DeploymentDeleted(Event, frozen=True, kw_only=True):
    KIND = "deployment"
    endpoint: Id
    deployment: Id
    replicas: list[Id] = msgspec.field(default_factory=list)


class DeploymentRolledBack(Event, frozen=True, kw_only=True):
    """A rolling update failed (replica ``run_id``'s attempt ``attempt`` could not start:
    ``error``): the roll stopped, the previous spec is the deployment's again with
    ``replicas`` (its replicas still running, and new runs in place of those the roll had
    stopped), and the new spec's replicas (``retired``) are stopped."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    run_id: Id
    attempt: int
    error: Text
    replicas: list[Id]
    retired: list[Id] = msgspec.field(default_factory=list)


class DeploymentScaled(Event, frozen=True, kw_only=True):
    """The autoscaler's decision: over the ``window_s`` seconds before it, the replicas
    were busy ``utilization_pct`` percent of the time on average (requests in flight per
    replica, in percent of the one each answers at a time), against a target of
    ``target_pct``; so ``replicas_before`` became ``replicas_after`` (within the spec's
    bounds), ``added`` replicas started and ``removed`` ones stopped."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    replicas_before: int
    replicas_after: int
    utilization_pct: float
    target_pct: float
    window_s: float
    #: when it was decided (the deciding scheduler's clock): the cooldown counts from here
    at: float
    requests: int = 0
    added: list[Id] = msgspec.field(default_factory=list)
    removed: list[Id] = msgspec.field(default_factory=list)


class ReplicaReplaced(Event, frozen=True, kw_only=True):
    """A replica of a serving deployment is gone for good (its ``init()`` raised: a scaled-out
    or restored replica, ``attempt``; or its run ended or was stopped while the deployment
    still named it): ``replacement`` takes its place, started after a back-off that grows
    with the replacements in a row (``at``: when it was decided). The deployment keeps its
    status: only a new spec's replica failing fails or rolls back a deployment."""

    KIND = "deployment"
    endpoint: Id
    deployment: Id
    run_id: Id
    attempt: int
    replacement: Id
    error: Text
    at: float


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        WorkspaceCreated,
        DefaultDatastoreSet,
        ExperimentCreated,
        ExperimentArchived,
        ExperimentRestored,
        RunCreated,
        RunStarted,
        RunCompleted,
        RunFailed,
        RunCanceled,
        RunSubmitted,
        RunAssigned,
        RunRequeued,
        RunCancelRequested,
        RunTagsSet,
        RunPropertiesAdded,
        ArtifactCommitted,
        ModelVersionRegistered,
        ModelAliasSet,
        ModelVersionArchived,
        ModelVersionRestored,
        AssetRegistered,
        AssetDeleted,
        DatastoreFilesUploaded,
        DatastoreCredentialsResealed,
        SecretSet,
        SecretResealed,
        SecretDeleted,
        SecretRead,
        WorkspaceKeyRotated,
        MemberAdded,
        MemberRolesChanged,
        MemberRemoved,
        ScheduleCreated,
        ScheduleDeleted,
        ScheduleDisabled,
        ScheduleEnabled,
        ScheduleFireFailed,
        ScheduleFired,
        ScheduleSkipped,
        ScheduleUpdated,
        PipelineSubmitted,
        PipelineStepStarted,
        PipelineStepReused,
        PipelineStepEnded,
        PipelineEnded,
        PipelinePublished,
        PipelineEndpointSet,
        MiniBatchesPrepared,
        MiniBatchLeased,
        MiniBatchCommitted,
        ParallelRunAborted,
        BatchEndpointCreated,
        BatchDeploymentSet,
        WebhookCreated,
        WebhookDeleted,
        WebhookSecretResealed,
        WebhookDeadLettered,
        SweepSubmitted,
        TrialProposed,
        TrialStopped,
        TrialEnded,
        SweepCancelRequested,
        SweepEnded,
        ChainCheckpointed,
        EndpointCreated,
        EndpointUpdated,
        EndpointKeysSet,
        EndpointDeleted,
        DeploymentCreated,
        DeploymentUpdated,
        ReplicaReady,
        DeploymentFailed,
        DeploymentDeleted,
        DeploymentRolledBack,
        DeploymentScaled,
        ReplicaReplaced,
    )
}


def _requeued_v1(data: dict[str, Any]) -> dict[str, Any]:
    """``RunRequeued`` v1 had no ``backoff_reset``: its back-off never started over."""
    return {**data, "backoff_reset": False}


#: ``(type, from_version) -> f(data) -> data of from_version + 1``; pure functions on dicts.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("RunRequeued", 1): _requeued_v1,
}


_raw_decoder = msgspec.json.Decoder(Envelope[msgspec.Raw])
_data_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()
}
_encoder = msgspec.json.Encoder()


def encode_envelope(envelope: Envelope[Event]) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes) -> Envelope[Event]:
    """Decode a stored event, upcasting an older shape first.

    Raises ``msgspec.ValidationError``/``DecodeError`` for malformed input and
    ``UnknownMessageType`` for a type this version does not know.
    """
    raw = _raw_decoder.decode(payload)
    cls = EVENT_TYPES.get(raw.type)
    if cls is None:
        raise UnknownMessageType(f"unknown event type {raw.type!r}")
    if raw.schema_version == cls.VERSION:
        data: Event = _data_decoders[raw.type].decode(raw.data)
    else:
        data = msgspec.convert(_upcast(raw.type, raw.schema_version, raw.data), cls)
    return Envelope(
        event_id=raw.event_id,
        type=raw.type,
        schema_version=cls.VERSION,
        workspace=raw.workspace,
        aggregate_kind=raw.aggregate_kind,
        aggregate_id=raw.aggregate_id,
        timestamp=raw.timestamp,
        actor=raw.actor,
        causation_id=raw.causation_id,
        correlation_id=raw.correlation_id,
        data=data,
    )


def _upcast(type_name: str, version: int, raw: msgspec.Raw) -> dict[str, Any]:
    target = EVENT_TYPES[type_name].VERSION
    if version > target:
        raise UnknownMessageType(f"{type_name} v{version} is newer than this reader (v{target})")
    value: dict[str, Any] = msgspec.json.decode(raw)
    while version < target:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise UnknownMessageType(f"no upcaster for {type_name} v{version}")
        value = step(value)
        version += 1
    return value
