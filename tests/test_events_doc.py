"""docs/events.md lists every event type with its kind and version, and links its schema."""

from __future__ import annotations

from pathlib import Path

from cairn.proto.events import EVENT_TYPES

DOC = Path(__file__).parents[1] / "docs" / "events.md"


def test_every_event_type_is_published() -> None:
    text = DOC.read_text()
    for name, cls in EVENT_TYPES.items():
        row = (
            f"| `{name}` | `{cls.KIND}` | {cls.VERSION} |"
            f" [events/{name}.json](../proto/cairn/proto/schemas/events/{name}.json) |"
        )
        assert row in text, f"docs/events.md has no row {row}"
        assert (DOC.parent / "../proto/cairn/proto/schemas/events" / f"{name}.json").exists()
