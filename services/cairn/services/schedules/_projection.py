"""The schedules service's read model: each schedule's folded state (the domain's own fold, so
the read model and the aggregate agree on the cursor), its next due time, and its fires with
the runs they submitted and how those runs ended (a fire's state: ``fired``, ``submitted``,
``skipped``, ``failed``, or ``dropped`` when its schedule was deleted before it was sent)."""

from __future__ import annotations

import sqlite3

import msgspec

from cairn.domain import schedule as schedules
from cairn.domain.triggers import dues_after
from cairn.projection import Delivered, Tables, events_of
from cairn.proto.events import (
    Envelope,
    Event,
    RunCanceled,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunSubmitted,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleFireFailed,
    ScheduleSkipped,
)
from cairn.proto.schedules import EventTrigger
from cairn.proto.subjects import name_to_id

__all__ = ["FIRE_COLUMNS", "SCHEDULE_COLUMNS", "SchedulesProjection", "decode_state", "next_due"]

SCHEDULE_COLUMNS = tuple(
    "workspace schedule_id name incarnation enabled next_due event_on event_key state"
    " created_by seq".split()
)
FIRE_COLUMNS = tuple(
    "workspace schedule_id incarnation due run_id covers event_seq at state error"
    " run_status".split()
)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(schedules.ScheduleState)
_END = {RunCompleted: "Completed", RunFailed: "Failed", RunCanceled: "Canceled"}


def decode_state(raw: str | bytes) -> schedules.ScheduleState:
    return _decoder.decode(raw)


def next_due(state: schedules.ScheduleState) -> float | None:
    """The next due time of an enabled time trigger (None: none left, or an event trigger)."""
    if not state.exists or not state.enabled or state.trigger is None:
        return None
    return next(iter(dues_after(state.trigger, state.after, state.created_at)), None)


class SchedulesProjection:
    name = "schedules"
    #: 2: the unsent fires of a deleted schedule are dropped
    version = 2
    tables: tuple[str, ...] = ("schedules", "fires")
    source = events_of("schedule", "run")

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('schedules')} (workspace TEXT, schedule_id TEXT, name TEXT,"
            " incarnation INTEGER, enabled INTEGER, next_due REAL, event_on TEXT,"
            " event_key TEXT, state TEXT, created_by TEXT, seq INTEGER,"
            " PRIMARY KEY (workspace, schedule_id))"
        )
        db.execute(f"CREATE INDEX {t('schedules')}_due ON {t('schedules')} (next_due)")
        db.execute(
            f"CREATE INDEX {t('schedules')}_event ON {t('schedules')}"
            " (workspace, event_on, event_key)"
        )
        db.execute(
            f"CREATE TABLE {t('fires')} (workspace TEXT, schedule_id TEXT, incarnation INTEGER,"
            " due REAL, run_id TEXT, covers INTEGER, event_seq INTEGER, at REAL, state TEXT,"
            " error TEXT, run_status TEXT)"
        )
        db.execute(
            f"CREATE INDEX {t('fires')}_schedule ON {t('fires')}"
            " (workspace, schedule_id, incarnation, at)"
        )
        db.execute(f"CREATE INDEX {t('fires')}_run ON {t('fires')} (workspace, run_id)")
        db.execute(f"CREATE INDEX {t('fires')}_state ON {t('fires')} (state)")

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env = item.value
        if env.aggregate_kind == "run":
            self._run(db, t, env)
        elif env.aggregate_kind == schedules.KIND:
            self._schedule(db, t, env, item.seq)

    def _run(self, db: sqlite3.Connection, t: Tables, env: Envelope[Event]) -> None:
        ev = env.data
        status = None
        if isinstance(ev, RunSubmitted):
            if ev.scheduled is None:
                return
            status = "Queued"
        elif isinstance(ev, RunStarted):
            status = "Running"
        elif isinstance(ev, RunCompleted | RunFailed | RunCanceled):
            status = _END[type(ev)]
        if status is None:
            return
        # a scheduled pipeline's run has no RunSubmitted: its start says it was submitted
        submitted = isinstance(ev, RunSubmitted | RunStarted)
        state = ", state='submitted'" if submitted else ""
        db.execute(
            f"UPDATE {t('fires')} SET run_status=?{state} WHERE workspace=? AND run_id=?",
            (status, env.workspace, env.aggregate_id),
        )

    def _schedule(self, db: sqlite3.Connection, t: Tables, env: Envelope[Event], seq: int) -> None:
        key = (env.workspace, env.aggregate_id)
        row = db.execute(
            f"SELECT state, created_by FROM {t('schedules')} WHERE workspace=? AND schedule_id=?",
            key,
        ).fetchone()
        before = decode_state(row[0]) if row else schedules.AGGREGATE.initial
        state = schedules.evolve(before, env.data)
        created_by = row[1] if row and state.incarnation == before.incarnation else env.actor
        trigger = state.trigger
        event_on = trigger.on if isinstance(trigger, EventTrigger) else None
        event_key = name_to_id(trigger.name) if isinstance(trigger, EventTrigger) else None
        db.execute(
            f"INSERT OR REPLACE INTO {t('schedules')} VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                *key,
                state.name,
                state.incarnation,
                int(state.exists and state.enabled),
                next_due(state),
                event_on,
                event_key,
                _encoder.encode(state).decode(),
                created_by,
                seq,
            ),
        )
        self._fire(db, t, env, state.incarnation)

    def _fire(self, db: sqlite3.Connection, t: Tables, env: Envelope[Event], n: int) -> None:
        key = (env.workspace, env.aggregate_id, n)
        match env.data:
            case ScheduleFired() as ev:
                db.execute(
                    f"INSERT INTO {t('fires')} VALUES (?,?,?,?,?,?,?,?,'fired','',NULL)",
                    (*key, ev.due, ev.run_id, ev.covers, ev.event_seq, ev.at),
                )
            case ScheduleSkipped() as ev:
                db.execute(
                    f"INSERT INTO {t('fires')} VALUES (?,?,?,?,NULL,?,NULL,?,'skipped','',NULL)",
                    (*key, ev.last_due, ev.count, ev.at),
                )
            case ScheduleDeleted():  # its fires not yet sent never will be
                db.execute(
                    f"UPDATE {t('fires')} SET state='dropped', error='the schedule was deleted'"
                    " WHERE workspace=? AND schedule_id=? AND incarnation=? AND state='fired'",
                    key,
                )
            case ScheduleFireFailed() as ev:
                db.execute(
                    f"UPDATE {t('fires')} SET state='failed', error=?"
                    " WHERE workspace=? AND run_id=?",
                    (ev.error, env.workspace, ev.run_id),
                )
