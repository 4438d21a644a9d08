"""The JSON Schemas in proto/ are generated from the code and must not drift."""

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from cairn.errors import UnknownMessageType
from cairn.proto import schema
from cairn.proto.events import (
    EVENT_TYPES,
    UPCASTERS,
    Envelope,
    RunFailed,
    decode_envelope,
    encode_envelope,
)


def test_schemas_match_the_code() -> None:
    assert schema.check() == [], "run: python -m cairn.proto.schema"


def test_schemas_do_not_depend_on_how_msgspec_formats_them() -> None:
    """msgspec 0.19 keeps a docstring's indentation and puts ``null`` first in an ``anyOf``;
    0.23 dedents and puts it last. Both must give the same files."""
    older = {
        "description": "First line:\n    an indented continuation.",
        "anyOf": [{"type": "null"}, {"$ref": "#/$defs/A"}],
        "$defs": {"A": {"description": "A.\n    More.\n    "}},
    }
    newer = {
        "description": "First line:\nan indented continuation.",
        "anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}],
        "$defs": {"A": {"description": "A.\nMore."}},
    }
    assert schema._normalised(older) == schema._normalised(newer)
    assert schema._normalised(newer)["description"] == "First line:\nan indented continuation."


def test_every_message_has_a_schema() -> None:
    names = set(schema.generate())
    for event in EVENT_TYPES:
        assert f"events/{event}.json" in names
    assert "envelope.json" in names and "replies/ErrorReply.json" in names


def test_drift_is_detected(tmp_path: Any) -> None:
    schema.write(tmp_path)
    assert schema.check(tmp_path) == []
    (tmp_path / "events" / "RunFailed.json").write_text("{}\n")
    (tmp_path / "stale.json").write_text("{}\n")
    assert schema.check(tmp_path) == ["events/RunFailed.json", "stale.json"]


def _stored(version: int, data: dict[str, Any]) -> bytes:
    env = {
        "event_id": "e1",
        "type": "RunFailed",
        "schema_version": version,
        "workspace": "w",
        "aggregate_kind": "run",
        "aggregate_id": "r1",
        "timestamp": datetime.now(UTC).isoformat(),
        "actor": "a",
        "causation_id": "c",
        "correlation_id": "c",
        "data": data,
    }
    return msgspec.json.encode(env)


def test_round_trip() -> None:
    env = decode_envelope(_stored(1, {"run_id": "r1", "error": "boom"}))
    assert env.data == RunFailed(run_id="r1", error="boom")
    assert decode_envelope(encode_envelope(env)) == env


def test_older_shapes_are_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    """A v1 event stays readable after RunFailed becomes v2 (``message`` renamed ``error``)."""
    monkeypatch.setattr(RunFailed, "VERSION", 2)
    monkeypatch.setitem(
        UPCASTERS, ("RunFailed", 1), lambda d: {"run_id": d["run_id"], "error": d.pop("message")}
    )
    env = decode_envelope(_stored(1, {"run_id": "r1", "message": "old shape"}))
    assert env.data == RunFailed(run_id="r1", error="old shape")
    assert env.schema_version == 2
    with pytest.raises(UnknownMessageType):
        decode_envelope(_stored(3, {"run_id": "r1"}))


def test_unknown_event_type_is_typed() -> None:
    payload = _stored(1, {}).replace(b'"RunFailed"', b'"Bogus"')
    with pytest.raises(UnknownMessageType):
        decode_envelope(payload)


def test_envelope_fields_are_validated() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(_stored(1, {}).replace(b'"w"', b'"w.>"'), type=Envelope[Any])
