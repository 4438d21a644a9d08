"""Commands (imperative) and queries, with the replies they get.

Commands travel as request/reply on ``cairn.cmd.<ws>.<verb>`` and queries on
``cairn.q.<ws>.<name>``; the body is one tagged struct (``"type": "StartRun"``). Every command
carries a client-made ``command_id``: it becomes the ``Nats-Msg-Id`` and the ``causation_id`` of
the events it causes, so a retried command never has a second effect and gets the same reply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from cairn.proto._base import Count, Id, Key, Name, Strict, TagKey, TagValue, Text

__all__ = [
    "COMMAND_TYPES",
    "MAX_HISTORY_PAGE",
    "MAX_RUNS_PAGE",
    "QUERY_TYPES",
    "Accepted",
    "AddRunProperties",
    "ArchiveExperiment",
    "AsOfQuery",
    "CancelRun",
    "Command",
    "CompleteRun",
    "CreateExperiment",
    "CreateRun",
    "CreateWorkspace",
    "ErrorReply",
    "FailRun",
    "GetExperiment",
    "GetHistory",
    "GetRun",
    "HeartbeatRun",
    "HistoryKind",
    "ListExperiments",
    "ListRuns",
    "ListWorkspaces",
    "Opened",
    "Query",
    "QueryResult",
    "Reply",
    "SetDefaultDatastore",
    "SetRunTags",
    "StartRun",
]


class Command(Strict, frozen=True, kw_only=True, tag=True):
    """Base of every command; ``VERB`` is the subject suffix it travels on. A field it does
    not declare is refused by name (``Strict``)."""

    VERB: ClassVar[str] = ""
    command_id: Id
    correlation_id: Id | None = None


class CreateWorkspace(Command, frozen=True, kw_only=True, tag=True):
    VERB = "workspace.create"
    name: Id
    description: Text = ""


class SetDefaultDatastore(Command, frozen=True, kw_only=True, tag=True):
    """The datastore a workspace's jobs write outputs without a path to, and local job inputs
    are uploaded to (``ws.get_default_datastore()``); ``workspaceblobstore`` until set."""

    VERB = "workspace.default_datastore"
    datastore: Key


class CreateExperiment(Command, frozen=True, kw_only=True, tag=True):
    """Get-or-create: creating an experiment that exists returns it unchanged."""

    VERB = "experiment.create"
    name: Name


class ArchiveExperiment(Command, frozen=True, kw_only=True, tag=True):
    """Archive an experiment (``restore``: bring it back); archiving an archived one, or
    restoring an active one, changes nothing."""

    VERB = "experiment.archive"
    name: Name
    restore: bool = False


class CreateRun(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.create"
    run_id: Id
    experiment_name: Name
    display_name: Name | None = None
    parent_run_id: Id | None = None


class StartRun(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.start"
    run_id: Id


class CompleteRun(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.complete"
    run_id: Id


class FailRun(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.fail"
    run_id: Id
    error: Text = ""


class CancelRun(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.cancel"
    run_id: Id
    reason: Text = ""


class HeartbeatRun(Command, frozen=True, kw_only=True, tag=True):
    """The process logging an interactive run is alive, and beats every ``every_s`` seconds.
    Sent by the SDK while the run is open; never spooled and never appended to EVENTS (the
    tracking service keeps the latest beat in the ``cairn_run_heartbeats`` bucket). A run that
    misses three beats is failed as lost (docs/design.md)."""

    VERB = "run.heartbeat"
    run_id: Id
    every_s: Annotated[float, msgspec.Meta(ge=0.05, le=3600.0)] = 10.0


class SetRunTags(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.tag"
    run_id: Id
    tags: dict[TagKey, TagValue]


class AddRunProperties(Command, frozen=True, kw_only=True, tag=True):
    VERB = "run.properties"
    run_id: Id
    properties: dict[TagKey, TagValue]


class Query(Strict, frozen=True, kw_only=True, tag=True):
    """Base of every query. ``min_seq`` asks the read model to have applied that stream
    sequence first (read-your-writes); the wait is bounded by ``wait_s``. A field it does not
    declare is refused by name."""

    NAME: ClassVar[str] = ""
    min_seq: Count = 0
    wait_s: float = 5.0


class AsOfQuery(Query, frozen=True, kw_only=True, tag=True):
    """A query that may be answered as the log stood at a moment: from the events up to
    stream sequence ``as_of_seq`` and stored (by the server's clock) at or before
    ``as_of_time`` (either or both), through the live read model's own projection and queries
    applied to those events alone, never from the current tables. Without either, from the
    live read model."""

    as_of_seq: Count | None = None
    as_of_time: datetime | None = None

    def then(self) -> str:
        """How a reply names the moment asked about (" as of sequence 12"), "" for now."""
        said = [f"sequence {self.as_of_seq}"] if self.as_of_seq is not None else []
        said += [self.as_of_time.isoformat()] if self.as_of_time is not None else []
        return f" as of {' and '.join(said)}" if said else ""


class ListWorkspaces(Query, frozen=True, kw_only=True, tag=True):
    """The workspaces the asker is a member of, with their roles there (services and the
    admin: every workspace). Asked on the subject of any workspace: the only query a person
    may send where they are not a member, since it answers with their own workspaces alone."""

    NAME = "workspace.list"


class ListExperiments(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """The workspace's experiments: the active ones, or ``archived`` (``"only"``, ``"all"``),
    each with its number of runs."""

    NAME = "experiment.list"
    archived: Literal["no", "only", "all"] = "no"


class GetExperiment(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """One experiment, archived or not, as ``experiment.list`` shows it."""

    NAME = "experiment.get"
    name: Name


#: the most runs one ``run.list`` page holds
MAX_RUNS_PAGE = 1000


class ListRuns(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """One page of runs: those matching ``filter``, sorted by ``order_by`` (ties broken by run
    id), at most ``limit`` of them. Pass the reply's ``next_cursor`` back as ``cursor`` (with
    the same filter and order) for the next page; it is null after the last one.

    The reply's ``data`` is ``{"runs": [run, ...], "next_cursor": str | null, "remaining":
    int | null, "metrics_seq": int}``; a run that a metric filter or order named carries
    ``"metrics": {name: {"last", "min", "max"}}``. ``min_seq`` is a sequence of EVENTS (runs,
    tags, properties);
    ``metrics_min_seq`` one of METRICS, for a filter or order on metrics that must see a batch
    just logged (``metrics_seq``: where the metric summaries stood). The grammar of ``filter``
    and ``order_by`` is in docs/design.md ("The runs query"); for example
    ``filter="metrics.loss.min < 0.2 AND tags.team = 'a'"``,
    ``order_by=["metrics.loss.min ASC", "created_at DESC"]``. The default order is
    ``created_at DESC``. As of a moment (``as_of_seq``, ``as_of_time``) the runs as the log
    held them then; metrics, which live in another stream, are then refused in the filter,
    the order and ``metrics``."""

    NAME = "run.list"
    experiment_name: Name | None = None
    #: at most this many runs on the page (1 to MAX_RUNS_PAGE)
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_RUNS_PAGE)] = 100
    #: only the children of this run
    parent_run_id: Id | None = None
    filter: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    order_by: Annotated[
        tuple[Annotated[str, msgspec.Meta(max_length=300)], ...], msgspec.Meta(max_length=8)
    ] = ()
    #: the ``next_cursor`` of the previous page
    cursor: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    metrics_min_seq: Count = 0
    #: also answer ``remaining``: how many matching runs follow this page (one more scan)
    count: bool = False
    #: also answer these metrics' summaries for each run of the page (a runs table's metric
    #: columns), beside those the filter and order name
    metrics: Annotated[tuple[Name, ...], msgspec.Meta(max_length=32)] = ()


#: the entities whose events ``history.get`` shows (a secret's are sealed values: not shown)
HistoryKind = Literal[
    "workspace",
    "experiment",
    "run",
    "model",
    "environment",
    "datastore",
    "compute",
    "dataset",
    "schedule",
]
#: the most events one ``history.get`` page holds
MAX_HISTORY_PAGE = 1000


class GetHistory(Query, frozen=True, kw_only=True, tag=True):
    """An entity's events in order: each with its sequence, time, type, actor, the command
    that caused it and the request it belongs to (correlation), and its data. ``name`` is
    the run's id, or the name of anything else (the workspace's own for ``workspace``).
    A page holds up to ``limit`` events after ``after_seq``; the reply's ``next_after`` is
    where the next page starts (null: no more)."""

    NAME = "history.get"
    entity_kind: HistoryKind
    name: Name
    after_seq: Count = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY_PAGE)] = MAX_HISTORY_PAGE


class GetRun(AsOfQuery, frozen=True, kw_only=True, tag=True):
    NAME = "run.get"
    run_id: Id


class Accepted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A command took effect. ``seq`` is the stream sequence of its last event (pass it as a
    query's ``min_seq`` to read your own write); ``replayed`` is true when this reply is for a
    command id that had already taken effect, in which case nothing new was appended."""

    command_id: Id
    aggregate_id: Id
    seq: int
    replayed: bool = False


class QueryResult(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``seq`` is the last stream sequence the read model had applied when it answered."""

    seq: int
    data: Any


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    code: str
    message: str


class Opened(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A session opened on one service instance (an upload): send the rest to ``subject``."""

    session_id: Id
    subject: str
    chunk_bytes: int


Reply = Accepted | QueryResult | Opened | ErrorReply

COMMAND_TYPES: tuple[type[Command], ...] = (
    CreateWorkspace,
    CreateExperiment,
    ArchiveExperiment,
    SetDefaultDatastore,
    CreateRun,
    StartRun,
    CompleteRun,
    FailRun,
    CancelRun,
    SetRunTags,
    AddRunProperties,
)
QUERY_TYPES: tuple[type[Query], ...] = (
    ListWorkspaces,
    ListExperiments,
    GetExperiment,
    ListRuns,
    GetRun,
    GetHistory,
)
