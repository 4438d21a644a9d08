"""Delivering one webhook: its own durable consumer, its own HTTP client, one event at a time.

Each live webhook has a durable pull consumer on EVENTS (``webhook-<ws>-<id>``, filtered to
its workspace's subjects, starting after the webhook's creation, ``max_ack_pending`` 1) and a
task that fetches from it. An event of the webhook's types whose fields match its filters is
POSTed in Event Grid's shape, signed, and retried with exponential backoff while the message
is kept in progress; it is acknowledged once delivered, or once every attempt failed and the
delivery is recorded in the dead-letter list (``WebhookDeadLettered``). A crash before the
acknowledgement redelivers the event (at least once; the ``Cairn-Webhook-Id`` header is the
same every time, for the receiver to deduplicate on). A slow or dead receiver holds back only
its own webhook: every webhook has its own consumer, task, client and timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

from cairn.bus import Connection, ensure_consumer
from cairn.domain.webhook import GiveUpDelivery
from cairn.errors import CairnError, UnknownMessageType
from cairn.log import get_logger
from cairn.proto.events import Envelope, Event, RunCreated, WebhookCreated, decode_envelope
from cairn.proto.feed import redact
from cairn.proto.streams import EVENTS, ConsumerConfig, webhook_consumer
from cairn.proto.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    event_grid_type,
    sign,
)
from cairn.settings import Settings
from cairn.telemetry import WEBHOOK_ATTEMPTS

__all__ = ["Delivery", "Webhook", "consumer_name", "event_grid_body"]

log = get_logger("cairn.webhooks")

#: the run's experiment name, for a run's events (``experiment=`` filters)
ExperimentOf = Callable[[str, str], Awaitable[str | None]]
#: records a delivery given up (the webhook aggregate's ``GiveUpDelivery``)
GiveUp = Callable[[str, str, GiveUpDelivery], Awaitable[None]]
#: while one delivery is being tried, the consumer is told it is in progress this often
_PROGRESS_S = 5.0


def consumer_name(ws: str, webhook_id: str) -> str:
    return webhook_consumer(ws, webhook_id, 1).durable_name


def event_grid_body(envelope: Envelope[Event], raw: dict[str, Any]) -> bytes:
    """The JSON array of one Event Grid event a receiver gets."""
    event = {
        "id": envelope.event_id,
        "topic": f"/workspaces/{envelope.workspace}",
        "subject": f"{envelope.aggregate_kind}/{envelope.aggregate_id}",
        "eventType": event_grid_type(envelope.type),
        "eventTime": raw["timestamp"],
        "data": redact(raw["data"]),
        "dataVersion": str(envelope.schema_version),
        "metadataVersion": "1",
    }
    return msgspec.json.encode([event])


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    created: WebhookCreated
    #: the stream sequence of ``created``: deliveries start after it
    created_seq: int
    secret: str

    @property
    def webhook_id(self) -> str:
        return self.created.webhook_id


class Delivery:
    """Delivers one webhook's events until stopped."""

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        hook: Webhook,
        *,
        experiment_of: ExperimentOf,
        give_up: GiveUp,
    ) -> None:
        self.conn, self.settings, self.hook = conn, settings, hook
        self.experiment_of, self.give_up = experiment_of, give_up
        self.types = frozenset(hook.created.event_types)
        self.name = consumer_name(hook.workspace, hook.webhook_id)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop fetching; a delivery in flight gets ``grace_s`` to finish, then is cut (its
        event is delivered again later, under the same id)."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        await asyncio.wait({task}, timeout=grace_s)
        # a cancellation that lands while a fetch times out can be lost (asyncio.wait_for in
        # nats-py): ask again until the task is done
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    async def delete_consumer(self) -> None:
        with contextlib.suppress(Exception):  # another replica deleted it first
            await self.conn.js.delete_consumer(EVENTS.name, self.name)

    def _config(self) -> ConsumerConfig:
        return webhook_consumer(
            self.hook.workspace, self.hook.webhook_id, self.hook.created_seq + 1
        )

    async def _run(self) -> None:
        psub = None
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        ) as http:
            try:
                while psub is None and not self._stopping.is_set():
                    try:
                        await ensure_consumer(self.conn, EVENTS.name, self._config())
                        psub = await self.conn.js.pull_subscribe_bind(
                            durable=self.name, stream=EVENTS.name
                        )
                    except Exception as exc:  # the bus is away: try again
                        log.warning("webhook_consumer_failed", consumer=self.name, error=repr(exc))
                        await asyncio.sleep(1.0)
                if psub is not None:
                    await self._pull(psub, http)
            finally:
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()

    async def _pull(self, psub: Any, http: httpx.AsyncClient) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await psub.fetch(1, timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # the connection logs the outage
                log.debug("webhook_fetch_failed", consumer=self.name, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self._handle(msg, http)
                except asyncio.CancelledError:  # stopping: another replica may take it now
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(msg.nak(), 1.0)
                    raise
                except Exception as exc:  # not acknowledged: redelivered after ack_wait
                    log.warning("webhook_event_failed", consumer=self.name, error=repr(exc))
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=1.0)

    async def _handle(self, msg: Any, http: httpx.AsyncClient) -> None:
        try:
            envelope = decode_envelope(msg.data)
        except (UnknownMessageType, msgspec.DecodeError, msgspec.ValidationError) as exc:
            # a type this version cannot read is none a webhook here asked for
            log.warning("webhook_event_unreadable", consumer=self.name, error=str(exc))
            await msg.ack()
            return
        if envelope.type in self.types and await self._matches(envelope):
            seq = msg.metadata.sequence.stream
            keep = asyncio.create_task(_keep_in_progress(msg))
            try:
                await self._deliver(envelope, msgspec.json.decode(msg.data), seq, http)
            finally:
                keep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keep
        await msg.ack_sync()

    async def _matches(self, envelope: Envelope[Event]) -> bool:
        filters = self.hook.created.filters
        if not filters:
            return True
        fields: dict[str, Any] = {
            k: v
            for k, v in msgspec.to_builtins(envelope.data).items()
            if isinstance(v, str | int | float | bool)
        }
        fields["kind"], fields["id"] = envelope.aggregate_kind, envelope.aggregate_id
        if "experiment" in filters:
            fields["experiment"] = await self._experiment(envelope)
        return all(str(fields.get(k)) == v for k, v in filters.items())

    async def _experiment(self, envelope: Envelope[Event]) -> str | None:
        data = envelope.data
        if isinstance(data, RunCreated):
            return data.experiment_name
        if envelope.aggregate_kind == "run":
            return await self.experiment_of(envelope.workspace, envelope.aggregate_id)
        if envelope.aggregate_kind == "experiment":
            return getattr(data, "name", None)
        source_run = getattr(data, "source_run_id", None)  # a model version from a run
        if isinstance(source_run, str):
            return await self.experiment_of(envelope.workspace, source_run)
        return None

    async def _deliver(
        self, envelope: Envelope[Event], raw: dict[str, Any], seq: int, http: httpx.AsyncClient
    ) -> None:
        delivery_id = f"{self.hook.webhook_id}-{seq}"
        body = event_grid_body(envelope, raw)
        attempts = max(1, self.settings.webhook_max_attempts)
        status: int | None = None
        error = ""
        for attempt in range(1, attempts + 1):
            status, error = await self._post(http, delivery_id, attempt, body)
            if not error:
                WEBHOOK_ATTEMPTS.labels("delivered").inc()
                log.debug("webhook_delivered", delivery=delivery_id, attempt=attempt)
                return
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            log.info("webhook_attempt_failed", delivery=delivery_id, attempt=attempt, error=error)
            if attempt < attempts:
                pause = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(min(pause, self.settings.webhook_backoff_max_s))
        give_up = GiveUpDelivery(
            delivery_id=delivery_id,
            event_seq=seq,
            event_id=envelope.event_id,
            event_type=envelope.type,
            attempts=attempts,
            status=status,
            error=error,
        )
        WEBHOOK_ATTEMPTS.labels("dead_lettered").inc()
        log.warning("webhook_dead_lettered", delivery=delivery_id, error=error)
        while True:  # the event is acknowledged only once the dead letter is in the log
            try:
                await self.give_up(self.hook.workspace, self.hook.webhook_id, give_up)
                return
            except CairnError as exc:
                log.warning("webhook_dead_letter_failed", delivery=delivery_id, error=str(exc))
                await asyncio.sleep(1.0)

    async def _post(
        self, http: httpx.AsyncClient, delivery_id: str, attempt: int, body: bytes
    ) -> tuple[int | None, str]:
        """One attempt: (the status, "") when the receiver took it (2xx), else (the status
        or None, what went wrong). Never the response's body."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Cairn-Webhooks/1",
            WEBHOOK_ID_HEADER: delivery_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.hook.secret, timestamp, body),
            "Cairn-Webhook-Attempt": str(attempt),
            "aeg-event-type": "Notification",
        }
        try:
            response = await http.post(self.hook.created.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"HTTP {response.status_code} {response.reason_phrase}"


async def _keep_in_progress(msg: Any) -> None:
    """Tell the consumer the event is still being worked on, so it is not redelivered to
    another replica while its retries run."""
    while True:
        await asyncio.sleep(_PROGRESS_S)
        with contextlib.suppress(Exception):
            await msg.in_progress()
