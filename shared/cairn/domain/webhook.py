"""Webhooks: an aggregate per workspace and id.

Created once (the secret sealed by the webhooks service before deciding: the domain sees the
token only), deleted once, and a delivery given up at most once per delivery id (two replicas
giving up the same delivery record it once).
"""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, NotFound
from cairn.proto.events import Event, WebhookCreated, WebhookDeadLettered, WebhookDeleted
from cairn.proto.webhooks import WEBHOOK_KIND, CreateWebhook, DeleteWebhook

__all__ = [
    "AGGREGATE",
    "CreateSealedWebhook",
    "GiveUpDelivery",
    "WebhookCommand",
    "WebhookState",
    "decide",
    "evolve",
]


class WebhookState(msgspec.Struct, frozen=True, kw_only=True):
    created: WebhookCreated | None = None
    deleted: bool = False
    dead_letters: tuple[WebhookDeadLettered, ...] = ()

    @property
    def live(self) -> bool:
        return self.created is not None and not self.deleted


def evolve(state: WebhookState, event: Event) -> WebhookState:
    match event:
        case WebhookCreated():
            return WebhookState(created=event)
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


WebhookCommand = CreateSealedWebhook | DeleteWebhook | GiveUpDelivery


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
