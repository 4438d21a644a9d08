"""When a time trigger is due: cron expressions (``croniter``) and Azure-style recurrences,
read as wall-clock times in the trigger's time zone (``zoneinfo``) and answered as instants
(seconds since the epoch). Pure: every function takes the times it needs.

A due time in a daylight-saving gap fires at the first instant after it (02:30 on the night
clocks jump from 02:00 to 03:00 fires at 03:00 for cron, and at the instant 02:30 of the old
offset names for a recurrence); one in the hour that repeats fires once, at its first
occurrence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from cairn.errors import InvalidInput
from cairn.proto.schedules import CronTrigger, EventTrigger, RecurrenceTrigger, Trigger

__all__ = ["MAX_COUNTED", "Pending", "as_utc", "check_trigger", "dues_after", "pending", "zone"]

#: the most missed due times a catch-up counts (it fires once; ``covers`` says "at least")
MAX_COUNTED = 1_000
#: how far ahead a recurrence looks for a day it fires on before it gives up
_HORIZON_DAYS = 366 * 30
_WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_STEP_S = {"minute": 60.0, "hour": 3600.0}

TimeTrigger = CronTrigger | RecurrenceTrigger
_FIELDS = ("minute", "hour", "day of the month", "month", "day of the week")
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAYS = "sun|mon|tue|wed|thu|fri|sat"


def _grammar(value: str, extra: str = "") -> re.Pattern[str]:
    ranged = rf"(?:\*|(?:{value})(?:-(?:{value}))?)(?:/\d+)?"
    return re.compile(rf"{ranged}{extra}", re.IGNORECASE)


_GRAMMARS = (
    _grammar(r"\d+"),
    _grammar(r"\d+"),
    _grammar(r"\d+", "|L"),
    _grammar(rf"\d+|{_MONTHS}"),
    _grammar(rf"\d+|{_DAYS}", rf"|(?:\d+|{_DAYS})#\d+"),
)


def zone(name: str, where: str = "trigger.time_zone") -> ZoneInfo:
    """The IANA time zone ``name``; ``InvalidInput`` naming ``where`` otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"{where}: unknown time zone {name!r:.80}") from exc


def _instant(moment: datetime | None, tz: ZoneInfo) -> float | None:
    """A start or end time as an instant: without an offset, a wall-clock time in ``tz``."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def check_trigger(trigger: Trigger) -> None:
    """Refuse a trigger that can never be read, naming the key: an unknown time zone, a cron
    expression ``croniter`` cannot parse, an end before the start, a pattern the frequency
    does not take."""
    if isinstance(trigger, EventTrigger):
        if trigger.alias is not None and trigger.on != "model_alias":
            raise InvalidInput("trigger.alias: only a model_alias trigger names an alias")
        return
    tz = zone(trigger.time_zone)
    start, end = _instant(trigger.start_time, tz), _instant(trigger.end_time, tz)
    if start is not None and end is not None and end <= start:
        raise InvalidInput("trigger.end_time: the end must come after trigger.start_time")
    if isinstance(trigger, CronTrigger):
        expression = trigger.expression.strip()
        if len(expression.split()) == 5:
            _check_fields(expression.split())
        if len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise InvalidInput(
                f"trigger.expression: {trigger.expression!r:.80} is not a five-field cron"
                " expression (minute hour day-of-month month day-of-week)"
            )
        return
    pattern = trigger.schedule
    if pattern is not None and trigger.frequency in _STEP_S:
        raise InvalidInput("trigger.schedule: only a day, week or month frequency takes a schedule")
    if pattern is not None and pattern.week_days and trigger.frequency != "week":
        raise InvalidInput("trigger.schedule.week_days: only with frequency week")
    if pattern is not None and pattern.month_days and trigger.frequency != "month":
        raise InvalidInput("trigger.schedule.month_days: only with frequency month")


def _check_fields(fields: list[str]) -> None:
    """Refuse, naming the field and the item, what ``croniter`` reads beyond the standard
    five fields' syntax: ``R`` (random: another time at each reading), ``H`` (hashed), ``?``,
    ``W`` and a ``L`` day of the week. ``L`` alone as the day of the month (its last day) and
    ``N#K`` as the day of the week (its K-th in the month) are read, being deterministic."""
    for field, grammar, text in zip(_FIELDS, _GRAMMARS, fields, strict=True):
        for item in text.split(","):
            if not grammar.fullmatch(item):
                raise InvalidInput(
                    f"trigger.expression: {item!r:.40} in the {field} field is not read (digits, *,"
                    " ranges a-b, steps /n, lists, month and day names; L as the day of the month,"
                    " N#K as the day of the week)"
                )


def _bounds(trigger: TimeTrigger, created_at: float) -> tuple[ZoneInfo, float, float]:
    tz = zone(trigger.time_zone)
    start = _instant(trigger.start_time, tz)
    end = _instant(trigger.end_time, tz)
    return tz, created_at if start is None else start, math.inf if end is None else end


def _cron(trigger: CronTrigger, after: float, start: float, tz: ZoneInfo) -> Iterator[float]:
    base = datetime.fromtimestamp(max(after, start - 1), tz)
    try:
        times = croniter(trigger.expression.strip(), base)
        while True:
            moment = times.get_next(datetime)
            if not _repeated(moment):
                yield moment.timestamp()
    except CroniterBadDateError:  # no further date matches (30 February)
        return
    except CroniterBadCronError as exc:  # checked at creation; an old record is still read
        raise InvalidInput(f"trigger.expression: {exc}") from exc


def _repeated(moment: datetime) -> bool:
    """Whether ``moment`` is the second occurrence of a wall-clock time the clocks went back
    over (croniter gives both; a repeated time fires once, at its first)."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def _days(trigger: RecurrenceTrigger, anchor: datetime, first: date) -> Iterator[date]:
    """The local dates a day, week or month recurrence fires on, from ``first``."""
    pattern = trigger.schedule
    week_days = {_WEEK_DAYS.index(d) for d in pattern.week_days} if pattern else set()
    month_days = set(pattern.month_days) if pattern else set()
    week_days = week_days or {anchor.weekday()}
    month_days = month_days or {anchor.day}
    monday = anchor.date() - timedelta(days=anchor.weekday())
    day = max(first, anchor.date())
    for _ in range(_HORIZON_DAYS):
        if trigger.frequency == "day":
            fires = (day - anchor.date()).days % trigger.interval == 0
        elif trigger.frequency == "week":
            week = (day - monday).days // 7
            fires = week % trigger.interval == 0 and day.weekday() in week_days
        else:
            months = (day.year - anchor.year) * 12 + day.month - anchor.month
            fires = months % trigger.interval == 0 and day.day in month_days
        if fires:
            yield day
        day += timedelta(days=1)


def _recurrence(
    trigger: RecurrenceTrigger, after: float, start: float, tz: ZoneInfo
) -> Iterator[float]:
    step = _STEP_S.get(trigger.frequency)
    if step is not None:  # elapsed time from the start, whatever the clocks on the wall say
        every = step * trigger.interval
        k = max(0, math.floor((after - start) / every) + 1)
        while True:
            yield start + k * every
            k += 1
    anchor = datetime.fromtimestamp(start, tz)
    pattern = trigger.schedule
    hours = sorted(set(pattern.hours)) if pattern and pattern.hours else [anchor.hour]
    minutes = sorted(set(pattern.minutes)) if pattern and pattern.minutes else [anchor.minute]
    first = datetime.fromtimestamp(max(after, start), tz).date() - timedelta(days=1)
    for day in _days(trigger, anchor, first):
        for hour in hours:
            for minute in minutes:
                at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()
                if at > after and at >= start:
                    yield at


def dues_after(trigger: Trigger, after: float, created_at: float) -> Iterator[float]:
    """The due times of ``trigger`` later than ``after``, in order, up to its end time (none
    for an event trigger). A trigger without a start time starts when its schedule was
    created (``created_at``)."""
    if isinstance(trigger, EventTrigger):
        return
    tz, start, end = _bounds(trigger, created_at)
    times = (
        _cron(trigger, after, start, tz)
        if isinstance(trigger, CronTrigger)
        else _recurrence(trigger, after, start, tz)
    )
    for due in times:
        if due > end:
            return
        if due > after and due >= start:
            yield due


class Pending(NamedTuple):
    """What is due up to a moment: how many (``due``; at most ``MAX_COUNTED``, and ``more``
    says there were more), the first, the one before the last, the last."""

    due: int
    first: float
    previous: float
    last: float
    more: bool = False


def pending(trigger: Trigger, after: float, now: float, created_at: float) -> Pending:
    """The due times of ``trigger`` in ``(after, now]``: their count (at most
    ``MAX_COUNTED``: a long outage of a frequent trigger is not enumerated), the first, the
    one before the last (the first when there is one) and the last."""
    count, first, previous, last = 0, 0.0, 0.0, 0.0
    for due in dues_after(trigger, after, created_at):
        if due > now:
            break
        if count >= MAX_COUNTED:  # more: find the last two near ``now``, counting no further
            previous, last = _last_two(trigger, now, created_at, (previous, last))
            return Pending(count, first, previous, last, more=True)
        count += 1
        first = first or due
        previous, last = last or due, due
    return Pending(count, first, previous, last)


def _last_two(
    trigger: Trigger, now: float, created_at: float, known: tuple[float, float]
) -> tuple[float, float]:
    """The last two due times up to ``now`` of a trigger whose due times ``known`` (the one
    before the last, the last) are before it: looked for in windows before ``now`` that
    widen until one holds two (or reaches back to ``known``)."""
    width = 3600.0
    while True:
        begin = max(known[1], now - width)
        previous, last = known
        for due in dues_after(trigger, begin, created_at):
            if due > now:
                break
            previous, last = last, due
        if begin == known[1] or previous > begin:
            return previous, last
        width *= 8


def as_utc(instant: float) -> str:
    """An instant as ISO 8601 in UTC (for people)."""
    return datetime.fromtimestamp(instant, UTC).isoformat().replace("+00:00", "Z")
