"""Golden event histories (docs/events.md, *Golden histories*): every recorded history is
replayed, through today's decoders and upcasters, into every read model and compared with the
read models stored when it was recorded; and today's event schemas are compared with the
newest history's, so a schema that changes without a new history (or an upcaster from the
recorded version) fails here, saying what to do. No server is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cairn.embedded._up import read_models
from cairn.portable import load_export
from cairn.projection import replay_offline
from cairn.proto.events import (
    EVENT_TYPES,
    UPCASTERS,
    RunTagsSet,
    decode_envelope,
    encode_envelope,
)
from cairn.proto.streams import EVENTS, METRICS
from tests.golden import synthetic
from tests.golden.golden import (
    AGGREGATES,
    RECORD,
    fixtures,
    folded,
    newest,
    replayed,
    schema_findings,
    schema_fingerprint,
)

FIXTURES = fixtures()


def _first_difference(stored: dict[str, Any], now: dict[str, Any]) -> str:
    for table in sorted(stored["tables"].keys() | now["tables"].keys()):
        a, b = stored["tables"].get(table), now["tables"].get(table)
        if a is None or b is None or a["columns"] != b["columns"]:
            return f"table {table}: columns {a and a['columns']} then, {b and b['columns']} now"
        for i, (row_a, row_b) in enumerate(zip(a["rows"], b["rows"], strict=False)):
            if row_a != row_b:
                return f"table {table} row {i}: {row_a} recorded, {row_b} now"
        if len(a["rows"]) != len(b["rows"]):
            return f"table {table}: {len(a['rows'])} rows recorded, {len(b['rows'])} now"
    return "the hashes differ"


def _compare(fixture: Path) -> list[str]:
    """What differs between the fixture's stored read models and a replay of its history."""
    now = replayed(fixture / "history")
    problems = []
    for name in sorted(read_models()):
        path = fixture / "read_models" / f"{name}.json"
        if not path.is_file():
            problems.append(
                f"read model {name} has no dump in {fixture.name}: write it with"
                f" {RECORD} --dumps {fixture.name}"
            )
            continue
        stored = json.loads(path.read_text())
        got = now[name]
        if got["errors"]:
            problems.append(f"{name} set events of {fixture.name} aside: {got['errors'][:3]}")
        elif stored["version"] != got["version"] and stored["hash"] != got["hash"]:
            problems.append(
                f"read model {name} changed (v{stored['version']} -> v{got['version']}):"
                f" {_first_difference(stored, got)}; if that is meant, write the dumps again with"
                f" {RECORD} --dumps {fixture.name}"
            )
        elif stored["hash"] != got["hash"]:
            problems.append(
                f"{name} replayed from {fixture.name} differs from what was recorded:"
                f" {_first_difference(stored, got)}"
            )
    return problems


def test_there_is_a_golden_history() -> None:
    assert FIXTURES, f"no golden history under tests/golden: record one with {RECORD}"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_a_golden_history_replays_to_the_read_models_recorded_with_it(fixture: Path) -> None:
    loaded = load_export(fixture / "history")  # also: whole, and its chain verifies
    assert loaded.events, f"{fixture.name} holds no events"
    problems = _compare(fixture)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_a_golden_history_folds_to_the_aggregates_recorded_with_it(fixture: Path) -> None:
    """Each aggregate's events folded by its domain module (what every command decides on)
    give the state recorded with the history."""
    path = fixture / "aggregates.json"
    assert path.is_file(), f"{fixture.name} has no aggregates.json: {RECORD} --dumps {fixture.name}"
    stored = json.loads(path.read_text())
    now = json.loads(json.dumps(folded(fixture / "history")))
    assert now.keys() == stored.keys()
    changed = [s for s in sorted(now) if now[s] != stored[s]]
    assert not changed, (
        f"{len(changed)} aggregate(s) of {fixture.name} fold to another state than recorded,"
        f" first {changed[0]}: {stored[changed[0]]} recorded, {now[changed[0]]} now"
    )


def test_todays_event_schemas_are_those_of_the_newest_golden_history() -> None:
    fixture = newest()
    assert fixture is not None
    recorded = json.loads((fixture / "schemas.json").read_text())
    findings = schema_findings(recorded, schema_fingerprint(), fixture.name)
    assert not findings, "\n".join(findings)


def test_a_changed_schema_fails_until_recorded_or_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a schema changed in place, a new type and a retired one are
    each named with what to do; a version raised with its upcaster registered is covered."""
    current = schema_fingerprint()
    recorded = json.loads(json.dumps(current))
    recorded["RunTagsSet"]["sha256"] = "0" * 64
    recorded["NoLongerWritten"] = {"version": 1, "sha256": "1" * 64}
    del recorded["RunCompleted"]
    findings = schema_findings(recorded, current, "v9")
    assert findings == [
        "schema NoLongerWritten is gone: an event type is never retired (old logs hold it);"
        " keep it",
        "schema RunCompleted is new since v9: make tests/golden/history_script.py write one"
        f" and record a new golden history with {RECORD}",
        f"schema RunTagsSet changed since v9 (v1): record a new golden history with {RECORD},"
        " and unless the change only adds fields with defaults, raise RunTagsSet.VERSION to 2"
        " and add an upcaster for RunTagsSet v1 -> v2"
        " (cairn.proto.events.UPCASTERS[('RunTagsSet', 1)])",
    ]
    monkeypatch.setattr(RunTagsSet, "VERSION", 2)
    assert len(schema_findings(recorded, current, "v9")) == 3  # raised, but no upcaster
    monkeypatch.setitem(UPCASTERS, ("RunTagsSet", 1), dict)
    assert len(schema_findings(recorded, current, "v9")) == 2


def test_golden_histories_replay_through_the_upcasters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A type's version raised with an upcaster: the recorded (older) events of that type go
    through it on their way into every read model, which come out as recorded."""
    calls: list[dict[str, Any]] = []

    def upcast(old: dict[str, Any]) -> dict[str, Any]:
        calls.append(old)
        return old

    monkeypatch.setattr(RunTagsSet, "VERSION", 2)
    monkeypatch.setitem(UPCASTERS, ("RunTagsSet", 1), upcast)
    fixture = newest()
    assert fixture is not None
    problems = _compare(fixture)
    assert not problems, "\n".join(problems)
    assert calls, f"{fixture.name} holds no RunTagsSet: pick another type here"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_synthetic_events_of_the_types_no_history_holds_decode_fold_and_project(
    fixture: Path,
) -> None:
    """The types a recorded history lacks (failures, fires, key rotations, membership
    changes), stored once as synthetic events on the history's own aggregates: each decodes
    through today's decoders and upcasters to what was stored, folds into its aggregate after
    the recorded events, and every read model takes them without setting one aside."""
    extra = synthetic.load(fixture)
    history = load_export(fixture / "history")
    have = {json.loads(bytes(line.data))["type"] for line in history.events}
    have |= {json.loads(data)["type"] for _, data in extra}
    assert have | synthetic.NEVER_IN_HISTORY == set(EVENT_TYPES), (
        f"no event of {sorted(set(EVENT_TYPES) - have - synthetic.NEVER_IN_HISTORY)} in"
        f" {fixture.name}: add one to tests/golden/synthetic.py and run"
        f" python -m tests.golden.synthetic {fixture.name}, or record a history that holds it"
    )
    by_subject: dict[str, list[Any]] = {}
    for line in history.events:
        by_subject.setdefault(line.subject, []).append(decode_envelope(bytes(line.data)).data)
    for subject, data in extra:
        env = decode_envelope(data)
        if env.schema_version == json.loads(data)["schema_version"]:
            assert encode_envelope(env) == data, f"{env.type} does not decode to what was stored"
        by_subject.setdefault(subject, []).append(env.data)
    for subject, events in by_subject.items():
        AGGREGATES[subject.split(".")[3]].fold(events)  # raises on an event it cannot take
    streams = {
        EVENTS.name: [(line.subject, bytes(line.data)) for line in history.events] + extra,
        METRICS.name: [(line.subject, bytes(line.data)) for line in history.metrics],
    }
    for name, make in sorted(read_models().items()):
        projection = make()
        done = replay_offline(projection, streams[projection.source.stream])
        done.db.close()
        assert not done.errors, f"{name} set synthetic events aside: {done.errors[:3]}"
