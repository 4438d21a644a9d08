"""Webhooks: an aggregate per workspace and id.

Created once (the secret sealed by the webhooks service before deciding: the domain sees the
token only), its secret sealed again under a new workspace key by a rotation, deleted once,
and a delivery given up at most once per delivery id (two replicas giving up the same
delivery record it once).
"""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, NotFound
from cairn.proto.events import (
    Event,
    WebhookCreated,
    WebhookDeadLettered,
    WebhookDeleted,
    WebhookSecretResealed,
)
from cairn.proto.webhooks import WEBHOOK_KIND, CreateWebhook, DeleteWebhook

__all__ = [
    "AGGREGATE",
    "CreateSealedWebhook",
    "GiveUpDelivery",
    "ResealSecret",
    "WebhookCommand",
    "WebhookState",
    "decide",
    "evolve",
]


class WebhookState(msgspec.Struct, frozen=True, kw_only=True):
    """``sealed_secret`` and ``key_id``: the secret's current token and the key that sealed
    it (the creation's, or a rotation's)."""

    created: WebhookCreated | None = None
    sealed_secret: str | None = None
    key_id: str | None = None
    deleted: bool = False
    dead_letters: tuple[WebhookDeadLettered, ...] = ()

    @property
    def live(self) -> bool:
        return self.created is not None and not self.deleted


def evolve(state: WebhookState, event: Event) -> WebhookState:
    match event:
        case WebhookCreated():
            return WebhookState(
                created=event, sealed_secret=event.sealed_secret, key_id=event.key_id
            )
        case WebhookSecretResealed(sealed_secret=sealed, key_id=key_id):
            return msgspec.structs.replace(state, sealed_secret=sealed, key_id=key_id)
        case WebhookDeleted():
            return msgspec.structs.replace(state, deleted=True)
        case WebhookDeadLettered():
            return msgspec.structs.replace(state, dead_letters=(*state.dead_letters, event))
    return state


class CreateSealedWebhook(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``command`` with its secret replaced by the token ``sealed`` (under key ``key_id``)."""

    command: CreateWebhook
    sealed: str
    key_id: str

    def __repr__(self) -> str:
        return f"CreateSealedWebhook(webhook_id={self.command.webhook_id!r}, sealed=<hidden>)"


class GiveUpDelivery(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Every attempt of delivery ``delivery_id`` failed: record it in the dead-letter list."""

    delivery_id: str
    event_seq: int
    event_id: str
    event_type: str
    attempts: int
    status: int | None = None
    error: str = ""


class ResealSecret(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Replace the secret's token by ``sealed`` (the same secret under key ``key_id``);
    nothing when the webhook is gone or already sealed under that key."""

    sealed: str
    key_id: str

    def __repr__(self) -> str:
        return f"ResealSecret(key_id={self.key_id!r}, sealed=<hidden>)"


WebhookCommand = CreateSealedWebhook | DeleteWebhook | GiveUpDelivery | ResealSecret


def decide(state: WebhookState, command: WebhookCommand) -> list[Event]:
    match command:
        case CreateSealedWebhook(command=cmd, sealed=sealed, key_id=key_id):
            if state.created is not None:
                raise AlreadyExists(f"webhook {cmd.webhook_id} exists already")
            return [
                WebhookCreated(
                    webhook_id=cmd.webhook_id,
                    url=cmd.url,
                    event_types=list(cmd.event_types),
                    filters=dict(cmd.filters),
                    description=cmd.description,
                    sealed_secret=sealed,
                    key_id=key_id,
                )
            ]
        case DeleteWebhook(webhook_id=webhook_id):
            if not state.live:
                raise NotFound(f"no webhook {webhook_id}")
            return [WebhookDeleted(webhook_id=webhook_id)]
        case ResealSecret(sealed=sealed, key_id=key_id):
            if not state.live or state.created is None or state.key_id == key_id:
                return []
            return [
                WebhookSecretResealed(
                    webhook_id=state.created.webhook_id, sealed_secret=sealed, key_id=key_id
                )
            ]
        case GiveUpDelivery():
            if state.created is None or any(
                d.delivery_id == command.delivery_id for d in state.dead_letters
            ):
                return []
            return [
                WebhookDeadLettered(
                    webhook_id=state.created.webhook_id,
                    delivery_id=command.delivery_id,
                    event_seq=command.event_seq,
                    event_id=command.event_id,
                    event_type=command.event_type,
                    attempts=command.attempts,
                    status=command.status,
                    error=command.error[:2000],
                )
            ]


AGGREGATE: Aggregate[WebhookState, WebhookCommand] = Aggregate(
    kind=WEBHOOK_KIND, initial=WebhookState(), evolve=evolve, decide=decide, commands=WebhookCommand
)
