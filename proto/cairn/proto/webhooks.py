"""Webhooks: a workspace's events delivered as HTTP POSTs, in the shape of Azure Event Grid's.

A webhook is an aggregate per workspace and id (``cairn.ev.<ws>.webhook.<id>``): created with
a URL, the event types it wants, optional filters and a signing secret (sealed by the webhooks
service under the workspace key before anything is stored; never answered back), deleted, and
each delivery given up after every attempt failed (``WebhookDeadLettered``). Data scientists
create and delete them in their workspaces (``cairn.cmd.<ws>.webhook.*``); every member may
list them and their dead letters.

What a receiver gets (docs/events.md): a JSON array of one Event Grid event, ``id`` (the
Cairn event id), ``topic`` (``/workspaces/<ws>``), ``subject`` (``<kind>/<id>``),
``eventType`` (:func:`event_grid_type`: ``Cairn.MachineLearning.<Type>``), ``eventTime``,
``data`` (the typed event body), ``dataVersion`` (its schema version) and ``metadataVersion``;
headers ``Cairn-Webhook-Id`` (the delivery id: the same on every retry), ``Cairn-Webhook-Timestamp``
and ``Cairn-Webhook-Signature: t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import urllib.parse
from typing import Annotated

import msgspec

from cairn.proto._base import Id, TagKey, TagValue, Text
from cairn.proto.commands import Command, Query
from cairn.proto.errors import InvalidInput

__all__ = [
    "EVENT_GRID_NAMESPACE",
    "MAX_FILTERS",
    "MIN_SECRET",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_COMMAND_TYPES",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_KIND",
    "WEBHOOK_QUERY_TYPES",
    "CreateWebhook",
    "DeleteWebhook",
    "ListDeadLetters",
    "ListWebhooks",
    "check_webhook_url",
    "event_grid_type",
    "sign",
    "verify",
]

WEBHOOK_KIND = "webhook"
EVENT_GRID_NAMESPACE = "Cairn.MachineLearning"
WEBHOOK_ID_HEADER = "Cairn-Webhook-Id"
TIMESTAMP_HEADER = "Cairn-Webhook-Timestamp"
SIGNATURE_HEADER = "Cairn-Webhook-Signature"
#: a signing secret has at least this many characters (and at most 256)
MIN_SECRET = 16
MAX_FILTERS = 16

WebhookUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
WebhookSecret = Annotated[str, msgspec.Meta(min_length=MIN_SECRET, max_length=256)]


def event_grid_type(type_name: str) -> str:
    """The Event Grid ``eventType`` of a Cairn event type: ``Cairn.MachineLearning.<Type>``."""
    return f"{EVENT_GRID_NAMESPACE}.{type_name}"


def check_webhook_url(url: object) -> str:
    """``url`` if it is an absolute ``http``/``https`` URL with a host, no user name or
    password, and not a link-local address (cloud metadata endpoints); else ``InvalidInput``.
    Hosts that resolve to internal addresses are allowed (docs/events.md, *Who may aim a
    webhook where*)."""
    if not isinstance(url, str) or not url:
        raise InvalidInput("a webhook's url must be a non-empty string")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidInput(f"webhook url {url!r:.200} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"webhook url {url!r:.200}: the scheme must be http or https, not {parts.scheme!r}"
        )
    if not host:
        raise InvalidInput(f"webhook url {url!r:.200} names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "a webhook url may not carry a user name or password: receivers check the"
            " Cairn-Webhook-Signature header instead"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if address.is_link_local:
        raise InvalidInput(
            f"webhook url {url!r:.200} is a link-local address (cloud metadata endpoints live"
            " there): not a webhook receiver"
        )
    return url


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Cairn-Webhook-Signature`` value of ``body`` sent at ``timestamp`` (Unix
    seconds): ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes) -> int:
    """The timestamp of a delivery whose ``Cairn-Webhook-Signature`` header matches ``body``
    (compared in constant time), else ``InvalidInput``. A receiver should also refuse a
    timestamp far from its clock (replays)."""
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        raise InvalidInput("the signature header has no timestamp t=") from None
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    given = [v for k, v in (p.split("=", 1) for p in header.split(",") if "=" in p) if k == "v1"]
    if not any(hmac.compare_digest(expected, g) for g in given):
        raise InvalidInput("the signature does not match the body")
    return timestamp


class CreateWebhook(Command, frozen=True, kw_only=True, tag=True):
    """Deliver the workspace's events of ``event_types`` (published type names:
    ``RunCompleted``...) to ``url``, those whose fields match every ``filters`` entry (``key
    = value``: a field of the event, ``kind`` or ``id`` of its entity, or ``experiment``: the
    name of the experiment of a run's events, or of the run a model version came from).
    ``secret`` signs each delivery; it is sealed by the webhooks service and never answered
    back."""

    VERB = "webhook.create"
    webhook_id: Id
    url: WebhookUrl
    event_types: Annotated[
        tuple[Annotated[str, msgspec.Meta(max_length=128)], ...],
        msgspec.Meta(min_length=1, max_length=64),
    ]
    filters: Annotated[dict[TagKey, TagValue], msgspec.Meta(max_length=MAX_FILTERS)] = (
        msgspec.field(default_factory=dict)
    )
    secret: WebhookSecret
    description: Text = ""

    def __repr__(self) -> str:  # never print the secret (tracebacks, logs, debuggers)
        return (
            f"CreateWebhook(webhook_id={self.webhook_id!r}, url={self.url!r},"
            f" event_types={self.event_types!r}, secret=<hidden>)"
        )


class DeleteWebhook(Command, frozen=True, kw_only=True, tag=True):
    """Stop delivering: what is in flight may still arrive once."""

    VERB = "webhook.delete"
    webhook_id: Id


class ListWebhooks(Query, frozen=True, kw_only=True, tag=True):
    """The workspace's live webhooks: id, url, event types, filters, who made them and when,
    how many deliveries were given up. Never the secret."""

    NAME = "webhook.list"


class ListDeadLetters(Query, frozen=True, kw_only=True, tag=True):
    """The deliveries given up (``webhook_id``'s, or every webhook's of the workspace), the
    newest last: delivery id, event sequence, id and type, attempts, last status and error."""

    NAME = "webhook.deliveries"
    webhook_id: Id | None = None


WEBHOOK_COMMAND_TYPES: tuple[type[Command], ...] = (CreateWebhook, DeleteWebhook)
WEBHOOK_QUERY_TYPES: tuple[type[Query], ...] = (ListWebhooks, ListDeadLetters)
