"""The schedule aggregate as given-when-then rows, and its triggers' due times (a cron
expression in a time zone across daylight-saving changes, recurrences)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
import pytest

from cairn.domain import schedule
from cairn.domain.schedule import (
    CreateScheduleAt,
    DeleteScheduleAt,
    DisableScheduleAt,
    EnableScheduleAt,
    FireOnEvent,
    FireSchedule,
    RecordFireFailed,
    UpdateScheduleAt,
    fire_run_id,
    template,
)
from cairn.domain.triggers import MAX_COUNTED, as_utc, check_trigger, dues_after, pending
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.events import (
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleDisabled,
    ScheduleEnabled,
    ScheduleFired,
    ScheduleFireFailed,
    ScheduleSkipped,
    ScheduleUpdated,
)
from cairn.proto.jobs import JobSpec, ScheduledBy, SubmitJob
from cairn.proto.schedules import (
    CatchUp,
    CreateSchedule,
    CronTrigger,
    DeleteSchedule,
    DisableSchedule,
    EnableSchedule,
    EventTrigger,
    RecurrencePattern,
    RecurrenceTrigger,
    Trigger,
    UpdateSchedule,
)
from cairn.proto.subjects import name_to_id
from tests.domain.gwt import Case, check, ids

T0 = datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC).timestamp()  # 10 s past a minute
MINUTE = 60.0
EVERY_MINUTE = RecurrenceTrigger(frequency="minute", interval=1)
SUBMIT = SubmitJob(command_id="c1", run_id="r1", experiment_name="e", job=JobSpec(command=["true"]))
DATASET = EventTrigger(on="dataset_version", name="diabetes")
WS = "lab"
SID = name_to_id("nightly")


def create(trigger: Trigger = EVERY_MINUTE) -> CreateScheduleAt:
    cmd = CreateSchedule(command_id="c", name="nightly", trigger=trigger, submission=SUBMIT)
    return CreateScheduleAt(command=cmd, now=T0, events_seq=3)


def created(trigger: Trigger = EVERY_MINUTE, catch_up: CatchUp = "once") -> ScheduleCreated:
    return ScheduleCreated(
        name="nightly",
        incarnation=1,
        trigger=trigger,
        submission=template(SUBMIT),
        catch_up=catch_up,
        at=T0,
        events_seq=3,
    )


def due(n: int) -> float:
    """The n-th due time of the every-minute trigger (12:0n:10)."""
    return T0 + n * MINUTE


def fired(n: int, covers: int = 1, at: float | None = None) -> ScheduleFired:
    run_id = fire_run_id(WS, SID, "nightly", 1, repr(due(n)))
    return ScheduleFired(due=due(n), run_id=run_id, covers=covers, at=due(n) if at is None else at)


SKIP = created(catch_up="skip")
LATE = due(3) + 40  # three due times missed, the last 40 s ago
EVENT_RUN = fire_run_id(WS, SID, "nightly", 1, "event:7")


def on_event(seq: int = 7, at: float = T0 + 5, name: str = "diabetes") -> FireOnEvent:
    return FireOnEvent(
        workspace=WS,
        schedule_id=SID,
        on="dataset_version",
        aggregate_id=name_to_id(name),
        alias=None,
        event_seq=seq,
        event_time=at,
        now=at,
    )


PROD = EventTrigger(on="model_alias", name="churn", alias="prod")


def alias_moved(alias: str) -> FireOnEvent:
    return FireOnEvent(
        workspace=WS,
        schedule_id=SID,
        on="model_alias",
        aggregate_id=name_to_id("churn"),
        alias=alias,
        event_seq=7,
        event_time=T0 + 5,
        now=T0 + 5,
    )


def update(catch_up: CatchUp) -> UpdateScheduleAt:
    cmd = UpdateSchedule(command_id="c", name="nightly", catch_up=catch_up)
    return UpdateScheduleAt(command=cmd, now=T0 + 1)


DISABLE = DisableScheduleAt(command=DisableSchedule(command_id="c", name="nightly"), now=T0 + 1)
ENABLE = EnableScheduleAt(command=EnableSchedule(command_id="c", name="nightly"), now=T0 + 2)
DELETE = DeleteScheduleAt(command=DeleteSchedule(command_id="c", name="nightly"), now=T0 + 3)

CASES = [
    Case("create: the submission is stored without its ids", [], create(), [created()]),
    Case("create again", [created()], create(), AlreadyExists, "exists"),
    Case(
        "create after a delete is a new incarnation",
        [created(), ScheduleDeleted(at=T0)],
        create(),
        [msgspec.structs.replace(created(), incarnation=2)],
    ),
    Case(
        "a submission that names a fire already",
        [],
        CreateScheduleAt(
            command=CreateSchedule(
                command_id="c",
                name="nightly",
                trigger=EVERY_MINUTE,
                submission=msgspec.structs.replace(
                    SUBMIT, scheduled=ScheduledBy(schedule="other", due=T0)
                ),
            ),
            now=T0,
        ),
        InvalidInput,
        "submission.scheduled",
    ),
    Case(
        "a bad cron expression names the key",
        [],
        create(CronTrigger(expression="61 * * * *")),
        InvalidInput,
        "trigger.expression",
    ),
    Case(
        "an unknown time zone names the key",
        [],
        create(CronTrigger(expression="* * * * *", time_zone="Mars/Olympus")),
        InvalidInput,
        "trigger.time_zone",
    ),
    Case(
        "an end before the start names the key",
        [],
        create(
            RecurrenceTrigger(
                frequency="day",
                start_time=datetime(2030, 2, 1),
                end_time=datetime(2030, 1, 1),
            )
        ),
        InvalidInput,
        "trigger.end_time",
    ),
    Case(
        "update the catch-up",
        [created()],
        update(catch_up="skip"),
        [
            ScheduleUpdated(
                trigger=EVERY_MINUTE, submission=template(SUBMIT), catch_up="skip", at=T0 + 1
            )
        ],
    ),
    Case("an update that changes nothing", [created()], update(catch_up="once"), []),
    Case("update a missing one", [], update(catch_up="skip"), NotFound, "no schedule"),
    Case("disable", [created()], DISABLE, [ScheduleDisabled(at=T0 + 1)]),
    Case("disable a disabled one", [created(), ScheduleDisabled(at=T0)], DISABLE, []),
    Case("disable a missing one", [], DISABLE, NotFound),
    Case("enable", [created(), ScheduleDisabled(at=T0)], ENABLE, [ScheduleEnabled(at=T0 + 2)]),
    Case("enable an enabled one", [created()], ENABLE, []),
    Case("delete", [created()], DELETE, [ScheduleDeleted(at=T0 + 3)]),
    Case("delete a deleted one", [created(), ScheduleDeleted(at=T0)], DELETE, NotFound),
    Case(
        "nothing due yet",
        [created()],
        FireSchedule(workspace=WS, schedule_id=SID, now=due(1) - 1),
        [],
    ),
    Case(
        "due on time",
        [created()],
        FireSchedule(workspace=WS, schedule_id=SID, now=due(1) + 1),
        [fired(1, at=due(1) + 1)],
    ),
    Case(
        "a fire already decided",
        [created(), fired(1)],
        FireSchedule(workspace=WS, schedule_id=SID, now=due(1) + 2),
        [],
    ),
    Case(
        "three missed: one catch-up run for all",
        [created()],
        FireSchedule(workspace=WS, schedule_id=SID, now=LATE),
        [fired(3, covers=3, at=LATE)],
    ),
    Case(
        "three missed with skip: none",
        [SKIP],
        FireSchedule(workspace=WS, schedule_id=SID, now=LATE),
        [ScheduleSkipped(first_due=due(1), last_due=due(3), count=3, at=LATE)],
    ),
    Case(
        "skip: the missed are skipped, the one on time fires",
        [SKIP],
        FireSchedule(workspace=WS, schedule_id=SID, now=due(3) + 1),
        [
            ScheduleSkipped(first_due=due(1), last_due=due(2), count=2, at=due(3) + 1),
            fired(3, at=due(3) + 1),
        ],
    ),
    Case(
        "a disabled schedule does not fire",
        [created(), ScheduleDisabled(at=T0)],
        FireSchedule(workspace=WS, schedule_id=SID, now=LATE),
        [],
    ),
    Case(
        "enabled again: counts from then, nothing caught up",
        [created(), ScheduleDisabled(at=T0), ScheduleEnabled(at=due(3) + 5)],
        FireSchedule(workspace=WS, schedule_id=SID, now=due(3) + 40),
        [],
    ),
    Case(
        "an event trigger has no due times",
        [created(DATASET)],
        FireSchedule(workspace=WS, schedule_id=SID, now=LATE),
        [],
    ),
    Case(
        "a new dataset version fires",
        [created(DATASET)],
        on_event(),
        [ScheduleFired(due=T0 + 5, run_id=EVENT_RUN, event_seq=7, at=T0 + 5)],
    ),
    Case(
        "the same event again fires nothing",
        [created(DATASET), ScheduleFired(due=T0 + 5, run_id=EVENT_RUN, event_seq=7, at=T0 + 5)],
        on_event(),
        [],
    ),
    Case(
        "an older event handled after a newer one still fires",
        [created(DATASET), ScheduleFired(due=T0 + 6, run_id="r9", event_seq=9, at=T0 + 6)],
        on_event(),
        [ScheduleFired(due=T0 + 5, run_id=EVENT_RUN, event_seq=7, at=T0 + 5)],
    ),
    Case("an event before the schedule existed", [created(DATASET)], on_event(seq=3), []),
    Case(
        "an event after the schedule, whatever its clock said",
        [created(DATASET)],
        on_event(seq=4, at=T0 - 5),
        [
            ScheduleFired(
                due=T0 - 5,
                run_id=fire_run_id(WS, SID, "nightly", 1, "event:4"),
                event_seq=4,
                at=T0 - 5,
            )
        ],
    ),
    Case(
        "a schedule recorded before the sequence was kept compares times",
        [msgspec.structs.replace(created(DATASET), events_seq=0)],
        on_event(seq=1, at=T0 - 5),
        [],
    ),
    Case("another dataset's version", [created(DATASET)], on_event(name="other"), []),
    Case("a time schedule ignores events", [created()], on_event(), []),
    Case(
        "the named alias of the model moved",
        [created(PROD)],
        alias_moved("prod"),
        [ScheduleFired(due=T0 + 5, run_id=EVENT_RUN, event_seq=7, at=T0 + 5)],
    ),
    Case("another alias of the model moved", [created(PROD)], alias_moved("staging"), []),
    Case(
        "any alias, when none is named",
        [created(EventTrigger(on="model_alias", name="churn"))],
        alias_moved("staging"),
        [ScheduleFired(due=T0 + 5, run_id=EVENT_RUN, event_seq=7, at=T0 + 5)],
    ),
    Case("a dataset trigger ignores a model", [created(DATASET)], alias_moved("prod"), []),
    Case(
        "a failed submission is recorded",
        [created(), fired(1)],
        RecordFireFailed(due=due(1), run_id=fired(1).run_id, error="no compute"),
        [ScheduleFireFailed(due=due(1), run_id=fired(1).run_id, error="no compute")],
    ),
    Case(
        "a failure of a fire that never was",
        [created()],
        RecordFireFailed(due=due(1), run_id="x", error="e"),
        InvalidInput,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_schedule(case: Case) -> None:
    check(schedule.AGGREGATE, case)


def test_an_update_never_moves_the_cursor_back() -> None:
    """An update decided by a replica whose clock is behind the last fire keeps the cursor
    at that fire: the due times it handled are not due again under the new trigger."""
    every_two = RecurrenceTrigger(frequency="minute", interval=2)
    update = ScheduleUpdated(trigger=every_two, submission=template(SUBMIT), at=due(1))
    state = schedule.AGGREGATE.fold([created(), fired(3), update])
    assert state.after == due(3)
    assert schedule.decide(state, FireSchedule(workspace=WS, schedule_id=SID, now=due(3))) == []


def test_a_fire_run_id_is_its_workspace_s() -> None:
    """The same schedule in two workspaces fires two runs at one due time (run ids key the
    run's events, and the ids derived from them, across the whole stream)."""
    state = schedule.AGGREGATE.fold([created()])
    runs = set()
    for ws in ("lab", "prod"):
        [fire] = schedule.decide(state, FireSchedule(workspace=ws, schedule_id=SID, now=due(1)))
        assert isinstance(fire, ScheduleFired)
        runs.add(fire.run_id)
    event = schedule.AGGREGATE.fold([created(DATASET)])
    for ws in ("lab", "prod"):
        [fire] = schedule.decide(event, msgspec.structs.replace(on_event(), workspace=ws))
        assert isinstance(fire, ScheduleFired)
        runs.add(fire.run_id)
    assert len(runs) == 4


def utc(*args: int) -> str:
    return as_utc(datetime(*args, tzinfo=UTC).timestamp())


def test_cron_in_a_time_zone_across_daylight_saving_changes() -> None:
    """09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer (the clocks went
    forward on 29 March 2026 and back on 25 October 2026); 02:30, which 29 March does not
    have, fires at 03:00 local that day."""
    at_nine = CronTrigger(expression="0 9 * * *", time_zone="Europe/Berlin")
    start = datetime(2026, 3, 28, tzinfo=UTC).timestamp()
    got = [as_utc(d) for d in itertools.islice(dues_after(at_nine, start, start), 3)]
    assert got == [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]
    autumn = datetime(2026, 10, 24, tzinfo=UTC).timestamp()
    got = [as_utc(d) for d in itertools.islice(dues_after(at_nine, autumn, autumn), 3)]
    assert got == [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]
    gap = CronTrigger(expression="30 2 * * *", time_zone="Europe/Berlin")
    got = [as_utc(d) for d in itertools.islice(dues_after(gap, start, start), 3)]
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


@pytest.mark.parametrize(
    ("expression", "zone", "day", "first"),
    [
        ("30 1 * * *", "America/New_York", datetime(2024, 11, 2, tzinfo=UTC), (5, 30)),
        ("30 2 * * *", "Europe/Berlin", datetime(2024, 10, 26, tzinfo=UTC), (0, 30)),
    ],
)
def test_a_repeated_wall_clock_time_fires_once(
    expression: str, zone: str, day: datetime, first: tuple[int, int]
) -> None:
    """The night the clocks go back, a time of the hour that repeats fires at its first
    occurrence only (croniter gives both)."""
    trigger = CronTrigger(expression=expression, time_zone=zone)
    start = day.timestamp()
    got = [as_utc(d) for d in itertools.islice(dues_after(trigger, start, start), 3)]
    hour, minute = first
    assert got[1] == utc(day.year, day.month, day.day + 1, hour, minute)
    # the next day, an hour later in UTC (standard time), and no second fire between
    assert got[2] == utc(day.year, day.month, day.day + 2, hour + 1, minute)


def test_a_cron_schedule_fires_at_those_instants() -> None:
    """The aggregate fires the cron trigger's UTC instants, one per decision on time."""
    trigger = CronTrigger(expression="0 9 * * *", time_zone="America/New_York")
    at = datetime(2026, 3, 7, tzinfo=UTC).timestamp()  # clocks go forward on 8 March
    state = schedule.AGGREGATE.fold([msgspec.structs.replace(created(trigger), at=at)])
    fires = []
    for now in (datetime(2026, 3, d, 14, 0, 5, tzinfo=UTC).timestamp() for d in (7, 8, 9)):
        events = schedule.decide(state, FireSchedule(workspace=WS, schedule_id=SID, now=now))
        state = schedule.AGGREGATE.fold(events, state)
        fires += [as_utc(e.due) for e in events if isinstance(e, ScheduleFired)]
    assert fires == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]


@pytest.mark.parametrize(
    "trigger",
    [CronTrigger(expression="* * * * *"), RecurrenceTrigger(frequency="minute")],
    ids=["cron", "recurrence"],
)
def test_a_long_outage_is_counted_up_to_a_bound(trigger: Trigger) -> None:
    """70 days of an every-minute trigger missed: counted up to ``MAX_COUNTED`` (at least
    that many), the last two due times found near the moment without enumerating the rest."""
    start = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    now = start + 70 * 86400 + 30
    found = pending(trigger, start, now, start)
    assert found.due == MAX_COUNTED and found.more
    assert (found.first, found.previous, found.last) == (start + 60, now - 90, now - 30)
    few = pending(trigger, start, start + 3 * 60, start)
    assert few == (3, start + 60, start + 120, start + 180, False)


def test_recurrences() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    every_two_weeks = RecurrenceTrigger(
        frequency="week",
        interval=2,
        schedule=RecurrencePattern(hours=[9], minutes=[0, 30], week_days=["monday", "friday"]),
        start_time=datetime(2029, 12, 31),  # a Monday
    )
    got = [as_utc(d) for d in itertools.islice(dues_after(every_two_weeks, start, start), 5)]
    assert got == [
        utc(2030, 1, 4, 9),
        utc(2030, 1, 4, 9, 30),
        utc(2030, 1, 14, 9),
        utc(2030, 1, 14, 9, 30),
        utc(2030, 1, 18, 9),
    ]
    monthly = RecurrenceTrigger(
        frequency="month", schedule=RecurrencePattern(hours=[6], minutes=[0], month_days=[31])
    )
    got = [as_utc(d) for d in itertools.islice(dues_after(monthly, start, start), 3)]
    assert got == [utc(2030, 1, 31, 6), utc(2030, 3, 31, 6), utc(2030, 5, 31, 6)]
    ended = RecurrenceTrigger(frequency="hour", interval=6, end_time=datetime(2030, 1, 2))
    assert len(list(dues_after(ended, start, start))) == 4


@pytest.mark.parametrize(
    ("trigger", "key"),
    [
        (
            RecurrenceTrigger(frequency="minute", schedule=RecurrencePattern(hours=[1])),
            "trigger.schedule",
        ),
        (
            RecurrenceTrigger(frequency="day", schedule=RecurrencePattern(week_days=["monday"])),
            "trigger.schedule.week_days",
        ),
        (EventTrigger(on="dataset_version", name="d", alias="prod"), "trigger.alias"),
        (CronTrigger(expression="* * * *"), "trigger.expression"),
        (CronTrigger(expression="R R * * *"), "'R' in the minute field"),
        (CronTrigger(expression="0 H * * *"), "'H' in the hour field"),
        (CronTrigger(expression="0 0 ? * *"), "'\\?' in the day of the month field"),
        (CronTrigger(expression="0 0 1W * *"), "'1W' in the day of the month field"),
        (CronTrigger(expression="0 0 * * L5"), "'L5' in the day of the week field"),
        (CronTrigger(expression="0 0 * * 1,R"), "'R' in the day of the week field"),
    ],
)
def test_bad_triggers_name_the_key(trigger: Trigger, key: str) -> None:
    with pytest.raises(InvalidInput, match=key.replace(".", r"\.")):
        check_trigger(trigger)


@pytest.mark.parametrize(
    "expression",
    ["*/15 9-17 * * mon-fri", "0 0 L * *", "0 0 * * fri#2", "0 6 1,15 jan-mar,Oct 0-6/2"],
)
def test_standard_cron_fields_are_read(expression: str) -> None:
    check_trigger(CronTrigger(expression=expression))
