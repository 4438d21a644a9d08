"""The bus: connect, provision, the one append path, aggregate reads, command execution."""

from cairn.bus._agents import live_agents
from cairn.bus._connect import RECONNECT_MAX_S, SCORER_USER, Connection, connect, per_client
from cairn.bus._execute import AggregateCache, CommandContext, execute, replayed
from cairn.bus._failures import transient
from cairn.bus._mirror import RunKeyMirror
from cairn.bus._ordered import (
    drop_subscription,
    read_ordered,
    stream_position,
    stream_seq,
    stream_time,
)
from cairn.bus._provision import (
    AGENT_STREAMS,
    cluster_replicas,
    ensure_consumer,
    ensure_stream,
    migrate_replicas,
    provision,
    wait_for_streams,
)
from cairn.bus._store import (
    TRANSIENT,
    AppendResult,
    EventStore,
    Recorded,
    Stored,
    permission_denied,
    stored_time,
)

__all__ = [
    "AGENT_STREAMS",
    "RECONNECT_MAX_S",
    "SCORER_USER",
    "TRANSIENT",
    "AggregateCache",
    "AppendResult",
    "CommandContext",
    "Connection",
    "EventStore",
    "Recorded",
    "RunKeyMirror",
    "Stored",
    "cluster_replicas",
    "connect",
    "drop_subscription",
    "ensure_consumer",
    "ensure_stream",
    "execute",
    "live_agents",
    "migrate_replicas",
    "per_client",
    "permission_denied",
    "provision",
    "read_ordered",
    "replayed",
    "stored_time",
    "stream_position",
    "stream_seq",
    "stream_time",
    "transient",
    "wait_for_streams",
]
