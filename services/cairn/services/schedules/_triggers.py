"""Event triggers: a durable consumer over EVENTS per kind of triggering event.

A new dataset version (``AssetRegistered`` on a dataset's subject) or a moved model alias
(``ModelAliasSet``) is matched against the schedules of its workspace with an event trigger
on that name, once the read model has applied the event's own sequence (so a schedule created
just before the event is seen). Each match is decided as ``FireOnEvent`` with a command id
derived from the schedule and the event's stream sequence, its run id likewise: a redelivered
event, or one two replicas both handle, fires once. The message is acknowledged once every
match is decided and submitted; until then it is redelivered, also after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

from cairn import lookup
from cairn.bus import ensure_consumer
from cairn.domain import schedule as schedules
from cairn.log import get_logger
from cairn.projection import Tables
from cairn.proto.events import AssetRegistered, Envelope, Event, ModelAliasSet, decode_envelope
from cairn.proto.jobs import ScheduledBy, derived_id
from cairn.proto.streams import EVENTS, schedule_trigger_consumer

if TYPE_CHECKING:
    from cairn.services.schedules._service import SchedulesService

__all__ = ["KINDS", "EventTriggers", "trigger_of"]

log = get_logger("cairn.schedules")
#: the aggregate kinds whose events can trigger a schedule
KINDS = ("dataset", "model")


def trigger_of(env: Envelope[Event]) -> tuple[str, str | None] | None:
    """What an event triggers (``on`` and the alias), or None."""
    match env.data:
        case AssetRegistered() if env.aggregate_kind == "dataset":
            return "dataset_version", None
        case ModelAliasSet(alias=alias):
            return "model_alias", alias
    return None


class EventTriggers:
    def __init__(self, service: SchedulesService) -> None:
        self.service = service
        self.subs: list[Any] = []

    async def start(self) -> None:
        conn = self.service.conn
        for kind in KINDS:
            config = schedule_trigger_consumer(kind)
            await ensure_consumer(conn, EVENTS.name, config)
            sub = await conn.js.pull_subscribe_bind(durable=config.durable_name, stream=EVENTS.name)
            self.subs.append(sub)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(*(self._pull(sub, stop) for sub in self.subs))
        finally:
            for sub in self.subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _pull(self, sub: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(32, timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # the bus is away: the connection logs the outage
                log.debug("trigger_fetch_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._settle(msg)

    async def _settle(self, msg: Any) -> None:
        try:
            env = decode_envelope(msg.data)
        except Exception as exc:  # not an event this version reads: it triggers nothing
            log.warning("trigger_event_unreadable", error=repr(exc))
            await msg.ack()
            return
        try:
            await self.handle(env, msg.metadata.sequence.stream)
        except Exception as exc:  # transient (the bus, a read model catching up): again later
            log.warning("trigger_failed", error=repr(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        await msg.ack()

    async def handle(self, env: Envelope[Event], seq: int) -> None:
        """Fire every schedule ``env`` (at stream sequence ``seq``) triggers."""
        found = trigger_of(env)
        if found is None:
            return
        on, alias = found
        service = self.service
        await service.projection.wait_for(seq, timeout=10)  # Unavailable: redelivered
        ws, key = env.workspace, env.aggregate_id

        def matching(db: sqlite3.Connection, t: Tables) -> list[tuple[str, int, str]]:
            rows = db.execute(
                f"SELECT schedule_id, incarnation, created_by FROM {t('schedules')}"
                " WHERE workspace=? AND event_on=? AND event_key=? AND enabled=1",
                (ws, on, key),
            )
            return [(str(s), int(n), str(by)) for s, n, by in rows]

        for sid, n, creator in service.projection.read(matching)[0]:
            command = schedules.FireOnEvent(
                workspace=ws,
                schedule_id=sid,
                on=on,
                aggregate_id=key,
                alias=alias,
                event_seq=seq,
                event_time=env.timestamp.timestamp(),
                now=service.clock(),
            )
            await service.decide(ws, sid, derived_id("onevent", ws, sid, n, seq), command)
            state = await lookup.state(service.cache, schedules.AGGREGATE, ws, sid, fresh=True)
            run_id = schedules.fire_run_id(ws, sid, state.name, state.incarnation, f"event:{seq}")
            fire = next((f for f in state.recent if f[1] == run_id), None)
            if fire is not None and state.submission is not None:
                scheduled = ScheduledBy(schedule=state.name, due=fire[0], event_seq=seq)
                await service.submit_one(ws, sid, state.submission, fire[1], scheduled, creator)
