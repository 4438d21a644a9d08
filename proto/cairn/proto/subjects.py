"""Subject names and the one validator every subject token goes through.

A token is ``[A-Za-z0-9_-]{1,64}``: no ``.``, ``*``, ``>`` or whitespace, so a name can never
change which aggregate (or how many) a subject addresses. Free-form names (experiment names,
model names) are mapped to a token by :func:`name_to_id`, never used raw.
"""

from __future__ import annotations

import hashlib
import re

from cairn.proto._base import refuse_invisible
from cairn.proto.errors import InvalidName

__all__ = [
    "AUDIT_CHAINS",
    "AUDIT_KEY",
    "AUDIT_KIND",
    "EVENTS_ALL",
    "METRICS_ALL",
    "PROJECTION_CONTROL",
    "PROJECTION_RETRY",
    "PROJECTION_STATUS",
    "PROJECTION_VERIFY",
    "agent_key",
    "audit_chain",
    "command",
    "command_filter",
    "event",
    "events_of_kind",
    "events_of_kind_in",
    "events_of_workspace",
    "job",
    "logs",
    "max_deliveries_advisory",
    "metrics",
    "name_to_id",
    "query",
    "query_filter",
    "serve",
    "upload_session",
    "upload_sessions",
    "validate_token",
]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASHED_PREFIX = "n-"

EVENTS_ALL = "cairn.ev.>"
#: the aggregate kind of the audit chain's checkpoints (one aggregate per workspace, ``chain``)
AUDIT_KIND = "audit"
AUDIT_CHAINS = "cairn.ev.*.audit.chain"
#: the audit service's public key and its id, asked of every instance (a broadcast people may
#: send: the key is public; a verifier still keeps a copy of its own)
AUDIT_KEY = "cairn.svc.audit.key"
METRICS_ALL = "cairn.metrics.>"
#: read models, asked of every instance that holds them (no queue group: each instance has
#: its own SQLite files): their state and quarantined events, and a retry of those
PROJECTION_CONTROL = "cairn.svc.projection.*"
PROJECTION_STATUS = "cairn.svc.projection.status"
PROJECTION_RETRY = "cairn.svc.projection.retry"
#: a read model compared with its replay from sequence 1, by each instance that holds it:
#: costly, so outside the broadcasts people may send (the services' user and the admin only)
PROJECTION_VERIFY = "cairn.ops.projection.verify"


def validate_token(value: object, what: str = "token") -> str:
    """Return ``value`` if it is a safe subject token, else raise ``InvalidName``."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        if isinstance(value, str):
            refuse_invisible(value, what)  # names a control character by its code point
        shown = repr(value)[:80]
        raise InvalidName(f"{what} {shown} must match [A-Za-z0-9_-]{{1,64}}")
    return value


def name_to_id(name: str) -> str:
    """Map a free-form name to a stable subject token.

    Names that are already tokens are kept as they are (readable subjects), except those that
    start with the prefix reserved for hashed names; every other name becomes ``n-`` plus 24 hex
    digits of its SHA-256, so two different names never share an id.
    """
    if isinstance(name, str):
        refuse_invisible(name, "name")
    if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
        raise InvalidName(f"name {name!r:.80} must be 1-256 printable characters")
    if _TOKEN.fullmatch(name) and not name.startswith(_HASHED_PREFIX):
        return name
    return _HASHED_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:24]


def _join(*tokens: str) -> str:
    return ".".join(tokens)


def event(ws: str, kind: str, aggregate_id: str) -> str:
    """``cairn.ev.<ws>.<kind>.<id>``: the subject of one aggregate's events."""
    return _join(
        "cairn.ev",
        validate_token(ws, "workspace"),
        validate_token(kind, "aggregate kind"),
        validate_token(aggregate_id, "aggregate id"),
    )


def audit_chain(ws: str) -> str:
    """``cairn.ev.<ws>.audit.chain``: the signed checkpoints of one workspace's hash chain."""
    return event(ws, AUDIT_KIND, "chain")


def events_of_workspace(ws: str) -> str:
    return _join("cairn.ev", validate_token(ws, "workspace"), ">")


def events_of_kind_in(ws: str, kind: str) -> str:
    """The events of every aggregate of ``kind`` in workspace ``ws``."""
    return _join(
        "cairn.ev", validate_token(ws, "workspace"), validate_token(kind, "aggregate kind"), "*"
    )


def events_of_kind(kind: str) -> str:
    """The events of every aggregate of ``kind`` in every workspace."""
    return _join("cairn", "ev", "*", validate_token(kind, "aggregate kind"), "*")


def metrics(ws: str, run_id: str) -> str:
    return _join("cairn.metrics", validate_token(ws, "workspace"), validate_token(run_id, "run"))


def logs(ws: str, run_id: str) -> str:
    return _join("cairn.logs", validate_token(ws, "workspace"), validate_token(run_id, "run"))


def job(ws: str, compute: str) -> str:
    return _join("cairn.jobs", validate_token(ws, "workspace"), validate_token(compute, "compute"))


def serve(ws: str, endpoint: str, deployment: str) -> str:
    """``cairn.serve.<ws>.<endpoint>.<deployment>``: a deployment's scoring requests
    (request/reply; its replicas' agents answer in one queue group)."""
    return _join(
        "cairn.serve",
        validate_token(ws, "workspace"),
        validate_token(endpoint, "endpoint"),
        validate_token(deployment, "deployment"),
    )


def _verb(verb: str) -> str:
    parts = verb.split(".")
    for part in parts:
        validate_token(part, "verb")
    return verb


def command(ws: str, verb: str) -> str:
    """``cairn.cmd.<ws>.<verb>``; ``verb`` may have several tokens (``run.start``)."""
    return _join("cairn.cmd", validate_token(ws, "workspace"), _verb(verb))


def query(ws: str, name: str) -> str:
    return _join("cairn.q", validate_token(ws, "workspace"), _verb(name))


def command_filter(area: str) -> str:
    """What a service subscribes to for one area of commands, across workspaces."""
    return _join("cairn.cmd.*", validate_token(area, "area"), ">")


def query_filter(area: str) -> str:
    return _join("cairn.q.*", validate_token(area, "area"), ">")


def upload_sessions(instance: str) -> str:
    """``cairn.artifacts.<instance>.>``: what one artifact service instance listens on for the
    chunks and commits of the upload sessions it opened."""
    return _join("cairn.artifacts", validate_token(instance, "instance"), ">")


def upload_session(instance: str, session: str) -> str:
    """``cairn.artifacts.<instance>.<session>``: where a client sends one upload's chunks
    (and ``.commit`` after it)."""
    return _join(
        "cairn.artifacts", validate_token(instance, "instance"), validate_token(session, "session")
    )


def max_deliveries_advisory(stream: str) -> str:
    """The advisories JetStream publishes when a consumer of ``stream`` stops redelivering a
    message (its ``max_deliver`` reached), for every consumer of the stream."""
    return _join(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES", validate_token(stream, "stream"), "*"
    )


def agent_key(agent_id: str) -> str:
    return validate_token(agent_id, "agent id")
