"""Jobs: runs that a compute agent executes.

1. ``SubmitJob`` (``cairn.cmd.<ws>.job.submit``, the scheduler) records ``RunSubmitted``,
   which creates the run; the run is ``Queued``.
2. The scheduler publishes a ``Ticket`` on ``cairn.jobs.<ws>.<compute>`` (message id
   ``ticket:<run>:<queue_n>``). An agent with a free slot pulls it and sends ``ClaimJob``;
   the scheduler appends ``RunAssigned{attempt}`` and answers ``Assignment``, or refuses with
   ``StaleAttempt`` when the ticket is not the run's current one (the agent then drops it).
3. The agent reports ``ReportJob`` (the first one records ``RunStarted``; the lease runs from
   there, and each later one renews it) and ends with ``FinishJob``. Every report names its
   attempt, and a report from any attempt but the current one is refused as stale:
   acknowledgements in JetStream are not fencing tokens, attempt numbers in the log are.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from cairn.proto._base import (
    Count,
    Digest,
    Id,
    Int64,
    Key,
    Name,
    Strict,
    TagKey,
    TagValue,
    Text,
)
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.commands import Command, Query
from cairn.proto.secrets import SecretName
from cairn.proto.serving import ReplicaSpec

__all__ = [
    "JOB_COMMAND_TYPES",
    "JOB_QUERY_TYPES",
    "SNAPSHOT_FILE",
    "Assignment",
    "ClaimJob",
    "DatasetRuns",
    "FinishJob",
    "GetJob",
    "JobEnvironment",
    "JobInput",
    "JobOutput",
    "JobSpec",
    "JobStatus",
    "ListJobs",
    "Outcome",
    "ReportJob",
    "ScheduledBy",
    "SubmitJob",
    "Ticket",
    "derived_id",
]

#: the name of a job's source archive inside its staging area
SNAPSHOT_FILE = "snapshot.tar.gz"


def derived_id(kind: str, *parts: object) -> str:
    """The command id of a decision that follows from a fact (``lost`` of run r, attempt n):
    every replica or retry that takes it derives the same id, so it takes effect once."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"{kind[:16]}-{digest[:40]}"


Outcome = Literal["completed", "failed", "canceled", "lost"]


class JobEnvironment(Strict, frozen=True, kw_only=True):
    """The environment a job runs in, resolved at submission so the run records what ran:
    a registered name and version (or ``None`` for an inline spec), the spec and its hash."""

    name: Name | None = None
    version: Count | None = None
    spec: EnvironmentSpec = msgspec.field(default_factory=EnvironmentSpec)
    spec_hash: str = ""


class JobInput(Strict, frozen=True, kw_only=True):
    """Data a job reads, made a local path on the agent before the job starts: a folder or
    file of a datastore, a file at a URL, or a registered dataset version (pinned at
    submission). ``mount`` gives a read-only copy; ``download`` a writable one.
    ``path_on_compute`` is relative to the job's folder (default ``inputs/<name>``, where a
    file lands as ``inputs/<name>/<its file name>``). Arguments ``${{inputs.<name>}}`` become
    it. ``as_dataset`` (a dataset bound with ``as_named_input(name)`` alone): inside the job
    ``run.input_datasets[name]`` is the dataset itself, read from that local copy. ``model``
    (with ``version`` or ``alias``, else the latest): a registered model version's files,
    downloaded into the input's folder."""

    name: Id
    mode: Literal["download", "mount"] = "download"
    datastore: Key | None = None
    path: Text = ""
    dataset: Name | None = None
    version: Count | None = None
    path_on_compute: Text | None = None
    as_dataset: bool = False
    #: data read from this URL: an ``https://`` file, or a file or folder of an fsspec
    #: scheme the agent can read, landing as ``<path_on_compute>/<its file name>`` (a
    #: folder with its layout); an ``s3://`` one names the S3 datastore of its bucket in
    #: ``datastore`` and the key's path inside it in ``path``, and is read through it
    url: Text | None = None
    model: Name | None = None
    alias: Id | None = None


class JobOutput(Strict, frozen=True, kw_only=True):
    """A folder the job writes (``path_on_compute``, default ``outputs/<name>``), uploaded to
    ``datastore:path`` when it ends, and registered as a version of dataset ``register_as``
    when named. Arguments ``${{outputs.<name>}}`` become it. A model output (``model_type``)
    is the run's files under its folder alone (no datastore) and, when ``register_as`` names
    it, the next version of that model, registered from the run with ``model_type`` as its
    framework."""

    name: Id
    datastore: Key | None = None
    path: Text = ""
    path_on_compute: Text | None = None
    register_as: Name | None = None
    model_type: Literal["custom_model", "mlflow_model", "triton_model"] | None = None


class JobSpec(Strict, frozen=True, kw_only=True):
    """What an agent needs to run a job.

    ``command`` is an argv list; a first word ``python`` means the environment's interpreter.
    ``snapshot`` is the digest of the source archive, committed in the staging area
    ``snapshot_area`` as ``snapshot.tar.gz``. ``max_attempts`` bounds how often a run is
    re-queued after its agent was lost; ``timeout_s`` bounds how long it may run.
    ``secrets`` names the workspace secrets the job's script may read (``run.get_secret``):
    its agent forwards a read of no other. ``serve`` makes the job a deployment's replica.
    """

    command: list[Text]
    snapshot: Digest | None = None
    snapshot_area: Id | None = None
    environment: JobEnvironment | None = None
    env_vars: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    timeout_s: float | None = None
    max_attempts: Count = 3
    priority: Int64 = 0
    gpus: Count = 0
    inputs: list[JobInput] = msgspec.field(default_factory=list)
    outputs: list[JobOutput] = msgspec.field(default_factory=list)
    secrets: list[SecretName] = msgspec.field(default_factory=list)
    #: a serving replica of an online deployment (``cairn.proto.serving``): its agent relays
    #: the deployment's requests to it, and its process ending unasked loses the attempt
    serve: ReplicaSpec | None = None


class ScheduledBy(Strict, frozen=True, kw_only=True):
    """The fire of a schedule that submitted a run: the schedule, the due time it fired for
    (seconds since the epoch; for an event trigger, the event's time) and, for an event
    trigger, the EVENTS sequence of the triggering event. The scheduler accepts it only from
    a fire the schedule's log records with this run id."""

    schedule: Name
    due: float
    event_seq: Count | None = None


class SubmitJob(Command, frozen=True, kw_only=True, tag=True):
    """Create a run and queue it on ``compute``. The environment is named (``name`` and
    optional version, resolved by the scheduler) or given inline in ``job.environment``."""

    VERB = "job.submit"
    run_id: Id
    experiment_name: Name
    compute: Key = "local"
    job: JobSpec
    environment_name: Name | None = None
    environment_version: Count | None = None
    display_name: Name | None = None
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    #: set by the schedules service on a schedule's submission (refused otherwise)
    scheduled: ScheduledBy | None = None
    #: the run this job is a child of (a pipeline's step, a sweep's trial), which must exist,
    #: in the same experiment
    parent_run_id: Id | None = None


class ClaimJob(Command, frozen=True, kw_only=True, tag=True):
    VERB = "job.claim"
    run_id: Id
    queue_n: Count
    agent_id: Id


class ReportJob(Command, frozen=True, kw_only=True, tag=True):
    """``running``: the job's process started (recorded once); ``progress``: still alive."""

    VERB = "job.report"
    run_id: Id
    attempt: Count
    phase: Literal["running", "progress"] = "progress"


class FinishJob(Command, frozen=True, kw_only=True, tag=True):
    """``lost`` is an infrastructure failure (the agent could not run the job): the run is
    re-queued while its attempt budget lasts."""

    VERB = "job.finish"
    run_id: Id
    attempt: Count
    outcome: Outcome
    exit_code: Int64 | None = None
    error: Text = ""


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    """The work-queue message: a wake-up naming a run and its queue number, nothing more."""

    workspace: Id
    run_id: Id
    queue_n: Count


class Assignment(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    run_id: Id
    attempt: int
    experiment_name: Name
    job: JobSpec
    lease_s: float


class JobStatus(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The answer to a report: ``cancel`` asks the agent to stop the job (canceled, or timed
    out when ``reason`` says so)."""

    run_id: Id
    attempt: int
    status: str
    cancel: bool = False
    reason: Text = ""


class DatasetRuns(Query, frozen=True, kw_only=True, tag=True):
    """The runs that read a dataset (one version, or all)."""

    NAME = "job.dataset_runs"
    dataset: Name
    version: Count | None = None


class ListJobs(Query, frozen=True, kw_only=True, tag=True):
    NAME = "job.list"
    compute: Id | None = None
    active: bool = False
    limit: Count = 100


class GetJob(Query, frozen=True, kw_only=True, tag=True):
    NAME = "job.get"
    run_id: Id


JOB_COMMAND_TYPES: tuple[type[Command], ...] = (SubmitJob, ClaimJob, ReportJob, FinishJob)
JOB_QUERY_TYPES: tuple[type[Query], ...] = (ListJobs, GetJob, DatasetRuns)
