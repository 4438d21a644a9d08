"""Golden event histories: what a fixture holds, how it is replayed, and how the event schemas
it was recorded with are compared with today's (docs/events.md, *Golden histories*).

A fixture is a folder ``tests/golden/v<N>/``::

    history/            a workspace's history in the export format (cairn.portable)
    read_models/<name>.json   every read model replayed from it: version, hash, rows
    aggregates.json     every aggregate of it folded by its domain module: subject -> state
    schemas.json        the fingerprint of the event schemas it was recorded with
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec

from cairn.domain import (
    Aggregate,
    asset,
    batch,
    endpoint,
    experiment,
    model,
    parallel,
    pipeline,
    published,
    run,
    schedule,
    secret,
    sweep,
    webhook,
    workspace,
)
from cairn.embedded._up import read_models
from cairn.portable import load_export
from cairn.projection import dump_tables, replay_offline
from cairn.proto.events import EVENT_TYPES, UPCASTERS, Event, decode_envelope
from cairn.proto.schema import SCHEMA_DIR
from cairn.proto.streams import EVENTS, METRICS

__all__ = [
    "AGGREGATES",
    "GOLDEN",
    "RECORD",
    "fixtures",
    "folded",
    "newest",
    "replayed",
    "schema_findings",
    "schema_fingerprint",
]

GOLDEN = Path(__file__).parent
RECORD = "python -m tests.golden.record"
#: what the fingerprint covers besides events/*.json: the envelope and the METRICS payload
_OTHER_SCHEMAS = {"envelope": "envelope.json", "MetricsLogged": "streams/MetricsLogged.json"}
#: keys of a schema node that describe rather than constrain (a field of that name is kept)
_PROSE = ("description", "title", "examples")
_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")


def _structure(node: Any, in_map: bool = False) -> Any:
    """A schema without its prose: a changed docstring is no schema change."""
    if isinstance(node, list):
        return [_structure(v) for v in node]
    if not isinstance(node, dict):
        return node
    if in_map:  # field or definition names: all kept, their schemas stripped
        return {k: _structure(v) for k, v in node.items()}
    return {
        k: _structure(v, in_map=k in _MAPS)
        for k, v in node.items()
        if not (k in _PROSE and isinstance(v, str))
    }


def _digest(path: Path) -> str:
    body = _structure(json.loads(path.read_text()))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def schema_fingerprint(schema_dir: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """Per event type (and the envelope and METRICS' batch): its schema version and the
    SHA-256 of its generated JSON Schema's structure."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((schema_dir / "events").glob("*.json")):
        body = json.loads(path.read_text())
        out[path.stem] = {"version": body["x-cairn-schema-version"], "sha256": _digest(path)}
    for name, rel in _OTHER_SCHEMAS.items():
        out[name] = {"version": 1, "sha256": _digest(schema_dir / rel)}
    return out


def _upcast_covers(name: str, recorded: int) -> bool:
    """Whether the upcasters take ``name`` from version ``recorded`` to today's."""
    cls = EVENT_TYPES.get(name)
    if cls is None or cls.VERSION <= recorded:
        return False
    return all((name, v) in UPCASTERS for v in range(recorded, cls.VERSION))


def schema_findings(
    recorded: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], fixture: str
) -> list[str]:
    """What today's schemas change against a fixture's, that neither the fixture nor an
    upcaster covers, one sentence each saying what to do."""
    out: list[str] = []
    for name in sorted(recorded.keys() - current.keys()):
        out.append(
            f"schema {name} is gone: an event type is never retired (old logs hold it); keep it"
        )
    for name in sorted(current.keys() - recorded.keys()):
        out.append(
            f"schema {name} is new since {fixture}: make tests/golden/history_script.py write"
            f" one and record a new golden history with {RECORD}"
        )
    for name in sorted(recorded.keys() & current.keys()):
        was, now = recorded[name], current[name]
        if was == now or _upcast_covers(name, int(was["version"])):
            continue
        v = int(was["version"])
        out.append(
            f"schema {name} changed since {fixture} (v{v}): record a new golden history with"
            f" {RECORD}, and unless the change only adds fields with defaults, raise"
            f" {name}.VERSION to {v + 1} and add an upcaster for {name} v{v} -> v{v + 1}"
            f" (cairn.proto.events.UPCASTERS[({name!r}, {v})])"
        )
    return out


def fixtures() -> list[Path]:
    """The fixtures, oldest first (``v1``, ``v2``, ...)."""
    found = [p for p in GOLDEN.glob("v*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]))


def newest() -> Path | None:
    every = fixtures()
    return every[-1] if every else None


def replayed(history: Path) -> dict[str, dict[str, Any]]:
    """Every read model replayed from a recorded history, without a server: its version,
    content hash, the events it set aside, and its rows."""
    loaded = load_export(history)
    streams = {
        EVENTS.name: [(line.subject, bytes(line.data)) for line in loaded.events],
        METRICS.name: [(line.subject, bytes(line.data)) for line in loaded.metrics],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, make in sorted(read_models().items()):
        projection = make()
        done = replay_offline(projection, streams[projection.source.stream])
        try:
            out[name] = {
                "read_model": name,
                "version": projection.version,
                "hash": done.hash,
                "errors": done.errors,
                "tables": dump_tables(done.db, projection, done.tables),
            }
        finally:
            done.db.close()
    return out


#: every aggregate the domain folds, by the kind its subjects name
AGGREGATES: dict[str, Aggregate[Any, Any]] = {
    a.kind: a
    for a in [
        batch.AGGREGATE,
        endpoint.ENDPOINT,
        endpoint.DEPLOYMENT,
        experiment.AGGREGATE,
        model.AGGREGATE,
        parallel.AGGREGATE,
        pipeline.AGGREGATE,
        published.PUBLISHED,
        published.ENDPOINT,
        run.AGGREGATE,
        run.STAGING,
        schedule.AGGREGATE,
        secret.AGGREGATE,
        secret.KEYRING,
        sweep.AGGREGATE,
        webhook.AGGREGATE,
        workspace.AGGREGATE,
        *asset.AGGREGATES.values(),
    ]
}


def folded(history: Path) -> dict[str, Any]:
    """Every aggregate of a recorded history folded by its domain module (through today's
    decoders and upcasters), subject by subject: its state as plain JSON values."""
    loaded = load_export(history)
    events: dict[str, list[Event]] = {}
    for line in loaded.events:
        events.setdefault(line.subject, []).append(decode_envelope(bytes(line.data)).data)
    out: dict[str, Any] = {}
    for subject, history_of in sorted(events.items()):
        kind = subject.split(".")[3]
        aggregate = AGGREGATES.get(kind)
        if aggregate is None:
            raise LookupError(f"{subject}: no aggregate of kind {kind} in AGGREGATES")
        out[subject] = msgspec.to_builtins(aggregate.fold(history_of), order="sorted")
    return out
