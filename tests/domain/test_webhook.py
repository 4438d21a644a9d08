"""Webhooks: a table of decisions (sealed tokens only, never the secret)."""

from __future__ import annotations

import pytest

from cairn.domain import webhook
from cairn.errors import AlreadyExists, NotFound
from cairn.proto.events import (
    Event,
    WebhookCreated,
    WebhookDeadLettered,
    WebhookDeleted,
    WebhookSecretResealed,
)
from cairn.proto.webhooks import CreateWebhook, DeleteWebhook
from tests.domain.gwt import Case, check, ids

WIRE = CreateWebhook(
    command_id="c1",
    webhook_id="h1",
    url="https://ci.example/hook",
    event_types=("RunCompleted",),
    filters={"experiment": "nightly"},
    secret="s" * 16,
)
CREATE = webhook.CreateSealedWebhook(command=WIRE, sealed="k1:t1", key_id="k1")
CREATED = WebhookCreated(
    webhook_id="h1",
    url="https://ci.example/hook",
    event_types=["RunCompleted"],
    filters={"experiment": "nightly"},
    sealed_secret="k1:t1",
    key_id="k1",
)
DELETE = DeleteWebhook(command_id="c2", webhook_id="h1")
GIVE_UP = webhook.GiveUpDelivery(
    delivery_id="h1-42",
    event_seq=42,
    event_id="e42",
    event_type="RunCompleted",
    attempts=8,
    status=503,
    error="503 Service Unavailable",
)
DEAD = WebhookDeadLettered(
    webhook_id="h1",
    delivery_id="h1-42",
    event_seq=42,
    event_id="e42",
    event_type="RunCompleted",
    attempts=8,
    status=503,
    error="503 Service Unavailable",
)
RESEAL = webhook.ResealSecret(sealed="k2:t1", key_id="k2")
RESEALED = WebhookSecretResealed(webhook_id="h1", sealed_secret="k2:t1", key_id="k2")
LIVE: list[Event] = [CREATED]
GONE: list[Event] = [CREATED, WebhookDeleted(webhook_id="h1")]

CASES = [
    Case("create", [], CREATE, [CREATED]),
    Case("create what exists", LIVE, CREATE, AlreadyExists, "exists already"),
    Case("create what was deleted: ids are not reused", GONE, CREATE, AlreadyExists, "exists"),
    Case("delete", LIVE, DELETE, [WebhookDeleted(webhook_id="h1")]),
    Case("delete what is not there", [], DELETE, NotFound, "no webhook"),
    Case("delete twice", GONE, DELETE, NotFound, "no webhook"),
    Case("reseal under a new key", LIVE, RESEAL, [RESEALED]),
    Case("reseal under the key it has", [*LIVE, RESEALED], RESEAL, []),
    Case("reseal what was deleted", GONE, RESEAL, []),
    Case("give up a delivery", LIVE, GIVE_UP, [DEAD]),
    Case("give up the same delivery again (another replica)", [*LIVE, DEAD], GIVE_UP, []),
    Case("give up after the delete: still recorded", GONE, GIVE_UP, [DEAD]),
    Case("give up for a webhook that never was", [], GIVE_UP, []),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_webhook(case: Case) -> None:
    check(webhook.AGGREGATE, case)


def test_the_secret_is_not_in_the_repr() -> None:
    assert "s" * 16 not in repr(WIRE) and "k1:t1" not in repr(CREATE)
