"""Generate the JSON Schema of every wire message into ``cairn/proto/schemas/``.

``python -m cairn.proto.schema`` rewrites the files; ``python -m cairn.proto.schema --check``
exits 1 when they differ from the code (a test runs the same check).
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from cairn.proto import (
    artifacts,
    assets,
    batch,
    feed,
    jobs,
    members,
    metrics,
    parallel,
    pipelines,
    registry,
    schedules,
    secrets,
    serving,
    sweeps,
    webhooks,
)
from cairn.proto.commands import (
    COMMAND_TYPES,
    QUERY_TYPES,
    Accepted,
    Command,
    ErrorReply,
    HeartbeatRun,
    Opened,
    Query,
    QueryResult,
)
from cairn.proto.events import EVENT_TYPES, Envelope

__all__ = ["SCHEMA_DIR", "check", "generate", "write"]

SCHEMA_DIR = Path(__file__).with_name("schemas")


def _normalised(node: Any) -> Any:
    """``node`` in a form that does not depend on the msgspec version that made it: every
    description cleaned as ``inspect.cleandoc`` cleans a docstring (versions differ in whether
    they dedent), the alternatives of every ``anyOf`` in one order (versions differ in where
    ``null`` goes; the order means nothing)."""
    if isinstance(node, list):
        return [_normalised(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalised(v) for k, v in node.items()}
    if isinstance(out.get("description"), str):
        out["description"] = inspect.cleandoc(out["description"])
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = sorted(out["anyOf"], key=lambda v: json.dumps(v, sort_keys=True))
    return out


def _schema(cls: Any, title: str) -> dict[str, Any]:
    (ref,), components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        **ref,
        "$defs": components,
    }
    normalised: dict[str, Any] = _normalised(schema)
    return normalised


def assets_commands() -> tuple[type[Command], ...]:
    return (
        assets.RegisterEnvironment,
        assets.RegisterComponent,
        assets.RegisterDatastore,
        assets.CreateCompute,
        assets.DeleteCompute,
        assets.RegisterDataset,
        assets.RecordUpload,
    )


def generate() -> dict[str, str]:
    """File name -> JSON text for every message."""
    out: dict[str, Any] = {"envelope.json": _schema(Envelope[dict[str, Any]], "Envelope")}
    for name, cls in EVENT_TYPES.items():
        schema = _schema(cls, name)
        schema["x-cairn-schema-version"] = cls.VERSION
        schema["x-cairn-aggregate-kind"] = cls.KIND
        out[f"events/{name}.json"] = schema
    commands: tuple[type[Command], ...] = (
        *COMMAND_TYPES,
        HeartbeatRun,
        metrics.LogMetrics,
        artifacts.OpenUpload,
        artifacts.CommitUpload,
        *jobs.JOB_COMMAND_TYPES,
        *pipelines.PIPELINE_COMMAND_TYPES,
        *parallel.PARALLEL_COMMAND_TYPES,
        *batch.BATCH_COMMAND_TYPES,
        *assets_commands(),
        *secrets.SECRET_COMMAND_TYPES,
        *members.MEMBER_COMMAND_TYPES,
        *schedules.SCHEDULE_COMMAND_TYPES,
        *webhooks.WEBHOOK_COMMAND_TYPES,
        *sweeps.SWEEP_COMMAND_TYPES,
        *serving.ENDPOINT_COMMAND_TYPES,
    )
    queries: tuple[type[Query], ...] = (
        *QUERY_TYPES,
        metrics.GetMetrics,
        metrics.MetricHistory,
        metrics.CompareMetric,
        artifacts.ListRunFiles,
        artifacts.GetRunFile,
        artifacts.ReadBlob,
        registry.GetModel,
        registry.ListModels,
        registry.ModelLineage,
        registry.ModelAliasHistory,
        assets.GetAsset,
        assets.ListAssets,
        *jobs.JOB_QUERY_TYPES,
        *pipelines.PIPELINE_QUERY_TYPES,
        *parallel.PARALLEL_QUERY_TYPES,
        *batch.BATCH_QUERY_TYPES,
        *secrets.SECRET_QUERY_TYPES,
        *members.MEMBER_QUERY_TYPES,
        *schedules.SCHEDULE_QUERY_TYPES,
        *feed.FEED_QUERY_TYPES,
        *webhooks.WEBHOOK_QUERY_TYPES,
        *sweeps.SWEEP_QUERY_TYPES,
        *serving.ENDPOINT_QUERY_TYPES,
    )
    out["streams/MetricsLogged.json"] = _schema(metrics.MetricsLogged, "MetricsLogged")
    out["streams/Ticket.json"] = _schema(jobs.Ticket, "Ticket")
    for cmd in commands:
        schema = _schema(cmd, cmd.__name__)
        schema["x-cairn-subject"] = f"cairn.cmd.<ws>.{cmd.VERB}"
        out[f"commands/{cmd.__name__}.json"] = schema
    for qry in queries:
        schema = _schema(qry, qry.__name__)
        schema["x-cairn-subject"] = f"cairn.q.<ws>.{qry.NAME}"
        out[f"queries/{qry.__name__}.json"] = schema
    for reply in (Accepted, QueryResult, Opened, ErrorReply, jobs.Assignment, jobs.JobStatus):
        out[f"replies/{reply.__name__}.json"] = _schema(reply, reply.__name__)
    return {name: json.dumps(s, indent=2, sort_keys=True) + "\n" for name, s in out.items()}


def write(directory: Path = SCHEMA_DIR) -> None:
    wanted = generate()
    for old in directory.rglob("*.json"):
        if str(old.relative_to(directory)) not in wanted:
            old.unlink()
    for name, text in wanted.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing, stale or extra."""
    wanted = generate()
    present = {str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*.json")}
    return sorted(n for n in wanted.keys() | present.keys() if wanted.get(n) != present.get(n))


#: the published list of event types (a source checkout's docs/events.md)
EVENTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"
_TABLE_HEAD = "| type | kind | version | schema |\n|---|---|---|---|\n"


def events_table() -> str:
    """The table of every event type, its kind, version and schema, as docs/events.md has it."""
    rows = [
        f"| `{name}` | `{cls.KIND}` | {cls.VERSION} |"
        f" [events/{name}.json](../proto/cairn/proto/schemas/events/{name}.json) |\n"
        for name, cls in EVENT_TYPES.items()
    ]
    return _TABLE_HEAD + "".join(rows)


def write_events_doc(path: Path = EVENTS_DOC) -> None:
    """Rewrite the table of event types in ``path`` (where it exists) from the code."""
    if not path.is_file():
        return
    text = path.read_text()
    start = text.index(_TABLE_HEAD)
    end = text.index("\n\n", start)
    path.write_text(text[:start] + events_table().rstrip("\n") + text[end:])


if __name__ == "__main__":
    if "--check" in sys.argv:
        drift = check()
        print("\n".join(drift) or "schemas up to date")
        sys.exit(1 if drift else 0)
    write()
    write_events_doc()
