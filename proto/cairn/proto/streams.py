"""Stream, consumer and KV definitions, in the JetStream JSON API's own field names.

Durations are nanoseconds, as on the wire. Why each setting (see docs/design.md):

* EVENTS is the truth: no limits, ``discard: new`` (a full store refuses writes rather than
  erase history), ``deny_delete``/``deny_purge``/no rollups, a 10 minute duplicate window for
  client retries, direct get for aggregate reads, atomic batches for multi-event commands.
* METRICS keeps points (batched per message) and refuses deletes too.
* LOGS is bounded by age and size and drops the oldest chunks.
* JOBS is a work queue; it must allow deletes, the scheduler removes dead tickets.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "AGENTS_BUCKET",
    "EVENTS",
    "JOBS",
    "KV_BUCKETS",
    "LEASES_BUCKET",
    "LOGS",
    "MAX_EVENT_BYTES",
    "METRICS",
    "RUN_HEARTBEATS_BUCKET",
    "STREAMS",
    "BucketConfig",
    "ConsumerConfig",
    "StreamConfig",
    "job_consumer",
    "schedule_trigger_consumer",
    "webhook_consumer",
]

_SECOND = 1_000_000_000
MAX_EVENT_BYTES = 256 * 1024


class StreamConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A stream's configuration as the JetStream API names it. A field left at None takes the
    server's default, is not sent, and is not compared when provisioning looks for drift."""

    name: str
    subjects: tuple[str, ...]
    storage: Literal["file", "memory"]
    retention: Literal["limits", "interest", "workqueue"]
    discard: Literal["old", "new"]
    max_msg_size: int
    #: nanoseconds
    duplicate_window: int
    num_replicas: int
    max_msgs: int | None = None
    max_bytes: int | None = None
    #: nanoseconds; 0 keeps messages for ever
    max_age: int | None = None
    deny_delete: bool | None = None
    deny_purge: bool | None = None
    allow_rollup_hdrs: bool | None = None
    allow_direct: bool | None = None
    allow_atomic: bool | None = None

    def to_api(self) -> dict[str, Any]:
        """The body of ``$JS.API.STREAM.CREATE`` / ``UPDATE``, as JSON decodes it (lists, so
        that it compares equal to the configuration the server reports)."""
        return _as_json(self)


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A durable pull consumer's configuration as the JetStream API names it."""

    durable_name: str
    filter_subject: str
    ack_policy: Literal["explicit", "all", "none"]
    #: nanoseconds
    ack_wait: int
    max_deliver: int
    #: nanoseconds between redeliveries
    backoff: tuple[int, ...]
    max_ack_pending: int
    max_waiting: int
    deliver_policy: Literal["all", "last", "new", "by_start_sequence"]
    #: with ``by_start_sequence``: the first stream sequence delivered
    opt_start_seq: int | None = None

    def to_api(self) -> dict[str, Any]:
        """The ``config`` of ``$JS.API.CONSUMER.CREATE``."""
        return _as_json(self)


class BucketConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A key-value bucket."""

    bucket: str
    history: int
    #: seconds a key lives after its last write; 0: for ever
    ttl_s: float
    description: str


def _as_json(config: msgspec.Struct) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(config))
    return body


EVENTS = StreamConfig(
    name="EVENTS",
    subjects=("cairn.ev.>",),
    storage="file",
    retention="limits",
    discard="new",
    max_msgs=-1,
    max_bytes=-1,
    max_age=0,
    max_msg_size=MAX_EVENT_BYTES,
    duplicate_window=600 * _SECOND,
    deny_delete=True,
    deny_purge=True,
    allow_rollup_hdrs=False,
    allow_direct=True,
    allow_atomic=True,
    num_replicas=1,
)

METRICS = StreamConfig(
    name="METRICS",
    subjects=("cairn.metrics.>",),
    storage="file",
    retention="limits",
    discard="new",
    max_msg_size=1024 * 1024,
    duplicate_window=600 * _SECOND,
    deny_delete=True,
    deny_purge=True,
    allow_direct=True,
    num_replicas=1,
)

LOGS = StreamConfig(
    name="LOGS",
    subjects=("cairn.logs.>",),
    storage="file",
    retention="limits",
    discard="old",
    max_age=30 * 24 * 3600 * _SECOND,
    max_bytes=10 * 1024**3,
    max_msg_size=1024 * 1024,
    duplicate_window=120 * _SECOND,
    allow_direct=True,
    num_replicas=1,
)

JOBS = StreamConfig(
    name="JOBS",
    subjects=("cairn.jobs.>",),
    storage="file",
    retention="workqueue",
    discard="new",
    max_msg_size=256 * 1024,
    duplicate_window=600 * _SECOND,
    deny_delete=False,
    num_replicas=1,
)

STREAMS: tuple[StreamConfig, ...] = (EVENTS, METRICS, LOGS, JOBS)

AGENTS_BUCKET = BucketConfig(
    bucket="cairn_agents",
    history=1,
    ttl_s=30.0,
    description="agent heartbeats and capacity; a key expires when its agent goes quiet",
)

LEASES_BUCKET = BucketConfig(
    bucket="cairn_job_leases",
    history=1,
    ttl_s=0.0,
    description="the last renewal of each held job's lease, shared by scheduler replicas",
)

RUN_HEARTBEATS_BUCKET = BucketConfig(
    bucket="cairn_run_heartbeats",
    history=1,
    ttl_s=24 * 3600.0,
    description="the latest heartbeat of each open interactive run, shared by tracking replicas"
    " (the age limit only collects keys of runs whose end was never seen)",
)

KV_BUCKETS: tuple[BucketConfig, ...] = (AGENTS_BUCKET, LEASES_BUCKET, RUN_HEARTBEATS_BUCKET)


def schedule_trigger_consumer(kind: str, *, ack_wait_s: float = 30.0) -> ConsumerConfig:
    """The durable pull consumer over EVENTS that the schedules service's replicas share for
    the events of one aggregate kind (``dataset``, ``model``) that can trigger a schedule:
    it resumes where it was acknowledged after a restart. Redelivery backs off; an event
    still failing after ``max_deliver`` deliveries is logged by the advisory and left."""
    from cairn.proto.subjects import events_of_kind

    wait = int(ack_wait_s * _SECOND)
    return ConsumerConfig(
        durable_name=f"schedule-triggers-{kind}",
        filter_subject=events_of_kind(kind),
        ack_policy="explicit",
        ack_wait=wait,
        max_deliver=50,
        backoff=(_SECOND, 5 * _SECOND, wait),
        max_ack_pending=256,
        max_waiting=512,
        deliver_policy="all",
    )


def job_consumer(
    ws: str, compute: str, *, ack_wait_s: float = 30.0, max_deliver: int = 5, slots: int = 1024
) -> ConsumerConfig:
    """The one durable pull consumer that every agent of a compute target shares.

    A ticket is only a wake-up: an agent acknowledges it once its claim is recorded, and the
    run's lease lives in the event log, not in the ack timer. ``ack_wait`` covers an agent
    that pulled a ticket and died before claiming it; redelivery backs off, and after
    ``max_deliver`` deliveries the server emits the MAX_DELIVERIES advisory that the scheduler
    turns into a failed run.
    """
    from cairn.proto.subjects import job, validate_token

    wait = int(ack_wait_s * _SECOND)
    return ConsumerConfig(
        durable_name=f"jobs-{validate_token(ws)}-{validate_token(compute)}",
        filter_subject=job(ws, compute),
        ack_policy="explicit",
        ack_wait=wait,
        max_deliver=max_deliver,
        backoff=tuple(wait * (2**i) for i in range(max(max_deliver - 1, 1))),
        max_ack_pending=slots,
        max_waiting=512,
        deliver_policy="all",
    )


def webhook_consumer(ws: str, webhook_id: str, start_seq: int) -> ConsumerConfig:
    """One webhook's durable consumer: its workspace's events from ``start_seq`` on, one in
    flight at a time (shared by the webhooks service's replicas), redelivered 30 s after a
    holder went silent; the service retries a delivery itself and never gives up on the
    message (``max_deliver`` unlimited): a delivery it gives up goes to the dead-letter list."""
    from cairn.proto.subjects import events_of_workspace, validate_token

    return ConsumerConfig(
        durable_name=f"webhook-{validate_token(ws)}-{validate_token(webhook_id)}",
        filter_subject=events_of_workspace(ws),
        ack_policy="explicit",
        ack_wait=30 * _SECOND,
        max_deliver=-1,
        backoff=(),
        max_ack_pending=1,
        max_waiting=512,
        deliver_policy="by_start_sequence",
        opt_start_seq=start_seq,
    )
