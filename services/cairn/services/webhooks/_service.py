"""The webhooks service: webhook commands and queries, the event feed, and the deliveries.

It follows the webhook aggregates of every workspace (``cairn.ev.*.webhook.*``, read in
pages from the log: its state is rebuilt from the log at every start) and keeps one
:class:`Delivery` per live webhook. Any number of replicas may run: they share each
webhook's durable consumer (one event in flight per webhook between them), and a dead letter
is recorded once per delivery id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, EventStore, Recorded, execute
from cairn.domain import webhook
from cairn.domain.webhook import CreateSealedWebhook, GiveUpDelivery, WebhookState
from cairn.errors import CairnError, PermissionDenied, Unauthenticated
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.events import WebhookDeadLettered, decode_envelope
from cairn.proto.feed import FEED_QUERY_TYPES, ReadEvents, check_event_types
from cairn.proto.webhooks import (
    WEBHOOK_COMMAND_TYPES,
    WEBHOOK_KIND,
    WEBHOOK_QUERY_TYPES,
    CreateWebhook,
    DeleteWebhook,
    ListDeadLetters,
    ListWebhooks,
    check_webhook_url,
)
from cairn.rpc import SERVICE_ACTOR, Request, Responder
from cairn.secrets import key_id_of, seal_text, sealing, unseal_text
from cairn.services.webhooks._delivery import Delivery, Webhook
from cairn.services.webhooks._feed import read_events
from cairn.settings import Settings

__all__ = ["WebhookService"]

log = get_logger("cairn.webhooks")
#: every workspace's webhook events
ALL_WEBHOOKS = "cairn.ev.*.webhook.*"
_PAGE = 256


class WebhookService:
    name = "webhooks"

    def __init__(
        self, conn: Connection, settings: Settings, *, follow_every_s: float = 0.5
    ) -> None:
        self.conn, self.settings = conn, settings
        self.store = EventStore(conn)
        self.cache = AggregateCache.shared(self.store)
        self.follow_every_s = follow_every_s
        #: (workspace, webhook id) -> (state, the sequence of its creation)
        self.hooks: dict[tuple[str, str], tuple[WebhookState, int]] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._position = 0
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter(WEBHOOK_KIND)],
                queue="webhooks",
                types=WEBHOOK_COMMAND_TYPES,
                routes={c.VERB: self._command for c in WEBHOOK_COMMAND_TYPES},
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter(WEBHOOK_KIND)],
                queue="webhooks",
                types=WEBHOOK_QUERY_TYPES,
                routes={ListWebhooks.NAME: self._list, ListDeadLetters.NAME: self._dead_letters},
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("events")],
                queue="webhooks",
                types=FEED_QUERY_TYPES,
                routes={ReadEvents.NAME: self._read_events},
            ),
        ]

    # -- the service's shape --------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._follow_once()
        except (PermissionDenied, Unauthenticated):
            raise  # wrong credentials or permissions: no matter of time, the start fails
        except CairnError as exc:  # EVENTS not serving reads yet (a cluster just started, an
            # election): the process starts all the same, and run() follows every round
            log.warning("webhooks_follow_failed", error=str(exc))
        for responder in self.responders:
            await responder.start()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.follow_every_s)
                if stop.is_set():
                    break
                try:
                    await self._follow_once()
                except (PermissionDenied, Unauthenticated) as exc:  # said, not retried quietly
                    log.error("webhooks_follow_refused", error=str(exc), code=exc.code)
                except CairnError as exc:  # the bus is away: the next round tries again
                    log.debug("webhooks_follow_failed", error=str(exc))
        finally:
            for responder in self.responders:
                await responder.stop()
            await asyncio.gather(*(d.stop() for d in self.deliveries.values()), *self._retiring)
            self.deliveries.clear()

    # -- following the webhooks -----------------------------------------------------------

    async def _follow_once(self) -> None:
        """Fold the webhook events after our position, then start and stop deliveries."""
        changed: set[tuple[str, str]] = set()
        while True:
            page = await self.store.page(ALL_WEBHOOKS, after_seq=self._position, limit=_PAGE)
            for seq, _, payload in page:
                self._position = seq
                try:
                    envelope = decode_envelope(payload)
                except (CairnError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # a newer writer's shape: its upcaster and a new version will read it
                    log.warning("webhook_event_unreadable", seq=seq, error=str(exc))
                    continue
                key = (envelope.workspace, envelope.aggregate_id)
                state, created_seq = self.hooks.get(key, (webhook.AGGREGATE.initial, 0))
                state = webhook.evolve(state, envelope.data)
                self.hooks[key] = (state, created_seq or seq)
                changed.add(key)
            if len(page) < _PAGE:
                break
        for key in changed:
            await self._reconcile(key)

    async def _reconcile(self, key: tuple[str, str]) -> None:
        state, created_seq = self.hooks[key]
        running = self.deliveries.get(key)
        if state.live and running is None and state.created is not None:
            ws = key[0]
            try:
                secret = unseal_text(self.settings, ws, state.sealed_secret or "")
            except CairnError as exc:  # its key is gone (a rotation): nothing can sign
                log.error("webhook_secret_unreadable", workspace=ws, webhook=key[1], error=str(exc))
                return
            hook = Webhook(
                workspace=ws, created=state.created, created_seq=created_seq, secret=secret
            )
            delivery = Delivery(
                self.conn,
                self.settings,
                hook,
                experiment_of=self._experiment_of,
                give_up=self._give_up,
            )
            delivery.start()
            self.deliveries[key] = delivery
            log.info("webhook_delivering", workspace=ws, webhook=key[1])
        elif not state.live and running is not None:
            del self.deliveries[key]
            # a delivery in flight gets its grace without holding up the other webhooks
            task = asyncio.create_task(self._retire(running, key))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, delivery: Delivery, key: tuple[str, str]) -> None:
        await delivery.stop()
        await delivery.delete_consumer()
        log.info("webhook_stopped", workspace=key[0], webhook=key[1])

    async def _experiment_of(self, ws: str, run_id: str) -> str | None:
        try:
            found = await lookup.run_state(self.cache, ws, run_id)
        except CairnError:
            return None
        return found.experiment_name or None

    async def _give_up(self, ws: str, webhook_id: str, command: GiveUpDelivery) -> None:
        ctx = _service_context(ws, command.delivery_id)
        await execute(ctx, webhook.AGGREGATE, webhook_id, command, cache=self.cache)

    # -- commands and queries -------------------------------------------------------------

    async def _command(self, req: Request) -> Accepted:
        cmd: CreateWebhook | DeleteWebhook = req.body
        command: webhook.WebhookCommand
        match cmd:
            case CreateWebhook():
                check_webhook_url(cmd.url)
                check_event_types(cmd.event_types)
                await lookup.require_workspace(self.cache, req.workspace)
                async with sealing(self.settings, req.workspace):  # sealed until stored
                    sealed = seal_text(self.settings, req.workspace, cmd.secret)
                    command = CreateSealedWebhook(
                        command=cmd, sealed=sealed, key_id=key_id_of(sealed) or "k0"
                    )
                    return await execute(
                        req.context(),
                        webhook.AGGREGATE,
                        cmd.webhook_id,
                        command,
                        cache=self.cache,
                        new=True,
                    )
            case DeleteWebhook():
                command, new = cmd, False
        return await execute(
            req.context(), webhook.AGGREGATE, cmd.webhook_id, command, cache=self.cache, new=new
        )

    async def _histories(self, ws: str) -> tuple[dict[str, list[Recorded]], int]:
        """Every webhook's history in workspace ``ws``, read from the log (exact: a webhook
        just created is there), and the last sequence read."""
        filt = subjects.event(ws, WEBHOOK_KIND, "x").removesuffix(".x") + ".*"
        found: dict[str, list[Recorded]] = {}
        after = 0
        while True:
            page = await self.store.page(filt, after_seq=after, limit=_PAGE)
            for seq, subject, payload in page:
                envelope = decode_envelope(payload)
                found.setdefault(envelope.aggregate_id, []).append(Recorded(seq, subject, envelope))
                after = seq
            if len(page) < _PAGE:
                return found, after

    async def _list(self, req: Request) -> QueryResult:
        found, seq = await self._histories(req.workspace)
        rows = []
        for history in found.values():
            state = webhook.AGGREGATE.fold(r.envelope.data for r in history)
            if not state.live or state.created is None:
                continue
            created = state.created
            rows.append(
                {
                    "id": created.webhook_id,
                    "url": created.url,
                    "events": created.event_types,
                    "filters": created.filters,
                    "description": created.description,
                    "created_at": history[0].envelope.timestamp.isoformat(),
                    "created_by": history[0].envelope.actor,
                    "dead_letters": len(state.dead_letters),
                }
            )
        rows.sort(key=lambda r: str(r["created_at"]))
        return QueryResult(seq=seq, data=rows)

    async def _dead_letters(self, req: Request) -> QueryResult:
        q: ListDeadLetters = req.body
        found, seq = await self._histories(req.workspace)
        rows: list[dict[str, Any]] = []
        for webhook_id, history in found.items():
            if q.webhook_id is not None and webhook_id != q.webhook_id:
                continue
            for r in history:
                ev = r.envelope.data
                if isinstance(ev, WebhookDeadLettered):
                    rows.append(
                        {
                            "webhook": webhook_id,
                            "delivery_id": ev.delivery_id,
                            "event_seq": ev.event_seq,
                            "event_id": ev.event_id,
                            "event_type": ev.event_type,
                            "attempts": ev.attempts,
                            "status": ev.status,
                            "error": ev.error,
                            "at": r.envelope.timestamp.isoformat(),
                            "seq": r.seq,
                        }
                    )
        rows.sort(key=lambda row: int(row["seq"]))
        return QueryResult(seq=seq, data=rows)

    async def _read_events(self, req: Request) -> QueryResult:
        return await read_events(self.store, req)


def _service_context(ws: str, delivery_id: str) -> CommandContext:
    """The context of a dead letter the service records: its command id derived from the
    delivery, so two replicas giving up the same delivery append one event."""
    digest = hashlib.sha256(f"{ws}/{delivery_id}".encode()).hexdigest()[:40]
    return CommandContext(workspace=ws, command_id="dl" + digest, actor=SERVICE_ACTOR)
