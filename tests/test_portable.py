"""Export and import of a workspace's history, against real servers: a workspace made through
the SDK (runs with metrics, tags and a file, a model registered from it) is exported with its
blobs, imported into a fresh home, and both sides replay to the same read models; the
imported events chain and verify there under the target's own audit key. A tampered,
truncated or malformed export, an artifact named outside its folder, and a target whose
workspace already has other events are refused, and nothing is stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cairn.audit import (
    chain_step,
    event_digest,
    load_or_create_signing_key,
    public_key_hex,
    verify_log,
)
from cairn.bus import Connection, EventStore
from cairn.embedded import NatsServer
from cairn.embedded._up import all_services, read_models
from cairn.errors import AlreadyExists, ConcurrencyConflict, InvalidInput, NotFound, Unavailable
from cairn.portable import (
    export_workspace,
    import_workspace,
    load_export,
    refuse_unsigned,
    verify_export,
)
from cairn.portable._export import _stored
from cairn.projection import replay, replay_offline
from cairn.proto import subjects
from cairn.proto.streams import EVENTS, METRICS
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.services.audit import AuditService
from cairn.settings import Settings
from cairn.storage import LocalBlobStore
from tests.conftest import own_server
from tests.helpers import envelope
from tests.test_cli import cli, run_cli


async def _make_history(ws: AsyncWorkspace, tmp: Path) -> None:
    exp = await ws.experiment("portable")
    run = await exp.start_run(display_name="first")
    for step in range(5):
        run.log("loss", 1.0 / (step + 1), step=step)
    run.log_list("acc", [0.1, 0.5, 0.9])
    await run.set_tags({"team": "vision"})
    await run.add_properties({"seed": "7"})
    weights = tmp / "model.bin"
    weights.write_bytes(b"weights " * 1000)
    await run.upload_file("outputs/model.bin", weights)
    await run.flush()
    await run.complete()
    await ws.models.register("portable-model", "outputs/model.bin", run_id=run.id)
    second = await exp.start_run(display_name="second")
    second.log("loss", 0.25)
    await second.flush()
    await second.fail("diverged")


def _offline_hashes(messages: dict[str, list[tuple[str, bytes]]]) -> dict[str, str]:
    """Every read model replayed from a recorded history, per stream, without a server."""
    out = {}
    for name, make in sorted(read_models().items()):
        projection = make()
        done = replay_offline(projection, messages[projection.source.stream])
        assert not done.errors, done.errors
        out[name] = done.hash
        done.db.close()
    return out


async def _live_hashes(conn: Connection, tmp: Path) -> dict[str, str]:
    """Every read model replayed from the live log of a home, as ``cairn replay`` does."""
    out = {}
    await asyncio.to_thread(tmp.mkdir)
    for name, make in sorted(read_models().items()):
        done = await replay(conn, make(), tmp / f"{name}.sqlite")
        out[name] = done.hash
        done.db.close()
    return out


async def _held(conn: Connection, ws: str) -> dict[str, list[tuple[str, bytes]]]:
    events = await _stored(conn, EVENTS.name, subjects.events_of_workspace(ws))
    metrics = await _stored(conn, METRICS.name, f"cairn.metrics.{ws}.>")
    return {
        EVENTS.name: [(m.subject, m.data) for m in events if ".audit." not in m.subject],
        METRICS.name: [(m.subject, m.data) for m in metrics],
    }


class Exported:
    def __init__(self, folder: Path, workspace: str, source: dict[str, list[tuple[str, bytes]]]):
        self.folder, self.workspace, self.source = folder, workspace, source


@pytest.fixture
async def exported(
    request: pytest.FixtureRequest,
    ws: AsyncWorkspace,
    conn: Connection,
    service_settings: Settings,
    tmp_path: Path,
) -> Exported:
    """An export of a fresh history, as JSON lines (or, parametrized indirectly, in the
    encoding given)."""
    encoding = getattr(request, "param", "jsonl")
    await _make_history(ws, tmp_path)
    folder = tmp_path / "export"
    blobs = LocalBlobStore(service_settings.artifacts_path)
    manifest = await export_workspace(
        conn, ws.name, folder, now=datetime.now(UTC), blobs=blobs, encoding=encoding
    )
    assert manifest.artifacts is not None and len(manifest.artifacts) == 1
    assert manifest.missing_artifacts == []
    assert manifest.metrics.count >= 2
    return Exported(folder, ws.name, await _held(conn, ws.name))


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[tuple[Settings, Connection]]:
    """A fresh home: its own server, nothing in its log."""
    server, settings, conn = await own_server(tmp_path / "target", request_timeout=5.0)
    settings = msgspec.structs.replace(
        settings,
        state_dir=str(tmp_path / "target" / "state"),
        artifacts_dir=str(tmp_path / "target" / "artifacts"),
        audit_every_events=5,
        audit_every_s=0.2,
    )
    try:
        yield settings, conn
    finally:
        await conn.close()
        server.stop()


@pytest.mark.parametrize("exported", ["jsonl", "parquet"], indirect=True)
async def test_an_import_into_a_fresh_home_replays_to_the_same_read_models(
    exported: Exported, target: tuple[Settings, Connection], tmp_path: Path
) -> None:
    settings, conn = target
    files = sorted(p.name for p in exported.folder.iterdir() if p.is_file())
    if exported.folder.joinpath("events.parquet").exists():
        assert files == [
            "checkpoints.parquet",
            "events.parquet",
            "manifest.json",
            "metrics.parquet",
        ]
        assert json.loads((exported.folder / "manifest.json").read_text())["encoding"] == "parquet"
    else:  # JSON lines: the manifest a Cairn without Parquet writes, no "encoding" in it
        assert files == ["checkpoints.jsonl", "events.jsonl", "manifest.json", "metrics.jsonl"]
        assert "encoding" not in json.loads((exported.folder / "manifest.json").read_text())
    blobs = LocalBlobStore(settings.artifacts_path)
    done = await import_workspace(conn, exported.folder, blobs=blobs, members="keep")
    n_events = len(exported.source[EVENTS.name])
    assert (done.events, done.events_present) == (n_events, 0)
    assert (done.metrics, done.artifacts) == (len(exported.source[METRICS.name]), 1)
    # ids, order and bytes: the target holds what the source holds, message for message
    assert await _held(conn, exported.workspace) == exported.source
    # the same read models: the export replayed offline, the source's history, and the
    # target's live log (nothing else in it) replayed as 'cairn replay' does
    loaded = load_export(exported.folder)
    from_file = _offline_hashes(
        {
            EVENTS.name: [(line.subject, bytes(line.data)) for line in loaded.events],
            METRICS.name: [(line.subject, bytes(line.data)) for line in loaded.metrics],
        }
    )
    assert from_file == _offline_hashes(exported.source)
    assert await _live_hashes(conn, tmp_path / "replayed") == from_file
    # the blob arrived, checked
    (entry,) = loaded.manifest.artifacts or []
    assert await blobs.size(entry.digest) == entry.size
    # the target's audit service chains the imported events; its chain verifies
    (row,) = await _signed(conn, settings, n_events)
    assert row["verdict"] == "ok" and row["workspace"] == exported.workspace
    # an import repeated stores nothing again
    again = await import_workspace(conn, exported.folder, blobs=blobs, members="keep")
    assert (again.events, again.events_present, again.metrics) == (0, n_events, 0)
    assert await _held(conn, exported.workspace) == exported.source


def _rewrite_line(path: Path, number: int, edit: object) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    body = json.loads(lines[number])
    assert callable(edit)
    edit(body)
    lines[number] = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def _copy(exported: Exported, tmp: Path) -> Path:
    folder = tmp / "copy"
    shutil.copytree(exported.folder, folder)
    return folder


async def test_an_export_whose_chain_does_not_verify_is_refused(
    exported: Exported, target: tuple[Settings, Connection], tmp_path: Path
) -> None:
    settings, conn = target
    folder = _copy(exported, tmp_path)

    def retag(body: dict[str, object]) -> None:
        data = body["data"]
        assert isinstance(data, dict)
        data["actor"] = "mallory"

    _rewrite_line(folder / "events.jsonl", 2, retag)
    with pytest.raises(InvalidInput, match=r"events\.jsonl line 3: .*digest does not verify"):
        await import_workspace(
            conn, folder, blobs=LocalBlobStore(settings.artifacts_path), members="keep"
        )
    assert await _held(conn, exported.workspace) == {EVENTS.name: [], METRICS.name: []}

    # the digest written again to match: the chain still gives it away
    def redigest(body: dict[str, object]) -> None:
        raw = json.dumps(body["data"], separators=(",", ":")).encode()
        body["data"] = json.loads(raw)
        body["digest"] = event_digest(str(body["subject"]), str(body["msg_id"]), raw)

    _rewrite_line(folder / "events.jsonl", 2, redigest)
    with pytest.raises(InvalidInput, match=r"line 3: .*the chain does not verify"):
        verify_export(folder)


def test_a_truncated_or_malformed_export_is_refused(exported: Exported, tmp_path: Path) -> None:
    folder = _copy(exported, tmp_path)
    events = folder / "events.jsonl"
    whole = events.read_bytes()
    events.write_bytes(whole[:-20])
    with pytest.raises(InvalidInput, match="truncated"):
        verify_export(folder)
    cut = whole.splitlines(keepends=True)
    events.write_bytes(b"".join(cut[:-1]))  # a whole line less
    with pytest.raises(InvalidInput, match="manifest counts"):
        verify_export(folder)
    events.write_bytes(b"".join([b"{not json\n", *cut[1:]]))
    with pytest.raises(InvalidInput, match="line 1: malformed"):
        verify_export(folder)
    events.write_bytes(whole + cut[-1])  # a line more than the manifest counts
    with pytest.raises(InvalidInput, match=f"line {len(cut) + 1}: more lines than the manifest"):
        verify_export(folder)
    events.write_bytes(whole)
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"manifest\.json is malformed"):
        verify_export(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(InvalidInput, match="holds no export"):
        verify_export(folder)


def _rewrite_parquet(path: Path, edit: Any) -> None:
    """The Parquet part at ``path`` written again with ``edit`` applied to its table."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(edit(table), path)


@pytest.mark.parametrize("exported", ["parquet"], indirect=True)
def test_a_parquet_export_is_checked_as_json_lines_are(exported: Exported, tmp_path: Path) -> None:
    import pyarrow as pa

    folder = _copy(exported, tmp_path)
    events = folder / "events.parquet"
    whole = events.read_bytes()
    loaded = load_export(folder)  # the stored bytes, unchanged, on their subjects
    assert [(line.subject, bytes(line.data)) for line in loaded.events] == exported.source[
        EVENTS.name
    ]

    def retag(table: Any) -> Any:
        data = table.column("data").to_pylist()
        data[2] = data[2].replace(b'"actor":"', b'"actor":"mallory', 1)
        return table.set_column(5, table.schema.field("data"), pa.array(data, pa.binary()))

    _rewrite_parquet(events, retag)
    with pytest.raises(InvalidInput, match=r"events\.parquet row 3: .*digest does not verify"):
        verify_export(folder)

    def drop_last(table: Any) -> Any:
        return table.slice(0, table.num_rows - 1)

    events.write_bytes(whole)
    _rewrite_parquet(events, drop_last)
    with pytest.raises(InvalidInput, match="the manifest counts"):
        verify_export(folder)

    def other_columns(table: Any) -> Any:
        return table.drop_columns(["chain"])

    events.write_bytes(whole)
    _rewrite_parquet(events, other_columns)
    with pytest.raises(InvalidInput, match=r"events\.parquet: its columns are"):
        verify_export(folder)
    events.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidInput, match=r"events\.parquet: not a Parquet file"):
        verify_export(folder)
    # the same rows written again by another writer: a file the manifest did not hash
    events.write_bytes(whole)
    _rewrite_parquet(events, lambda table: table)
    with pytest.raises(InvalidInput, match=r"events\.parquet is not the file the manifest hashed"):
        verify_export(folder)
    events.write_bytes(whole)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["encoding"] = "csv"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="its parts are written as 'csv'"):
        verify_export(folder)


async def test_an_unknown_export_format_is_refused_by_name(
    conn: Connection, store: EventStore, ws_name: str, tmp_path: Path
) -> None:
    await store.append(
        subjects.event(ws_name, "experiment", "e"),
        [envelope(ws_name, "e")],
        expected_seq=0,
        msg_id="e",
    )
    with pytest.raises(InvalidInput, match="no export format 'csv': one of jsonl, parquet"):
        await export_workspace(
            conn, ws_name, tmp_path / "out", now=datetime.now(UTC), encoding="csv"
        )
    assert not (tmp_path / "out").exists()


async def test_artifacts_are_checked_and_named_only_by_their_digest(
    exported: Exported, tmp_path: Path
) -> None:
    folder = _copy(exported, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = dict(manifest["artifacts"][0])
    target_blobs = LocalBlobStore(tmp_path / "blobs")
    for hostile in ["../../outside", "artifacts/../manifest.json", "/etc/passwd", "artifacts/x"]:
        manifest["artifacts"][0]["file"] = hostile
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InvalidInput, match="is not named artifacts/<the hex of its digest>"):
            verify_export(folder)
    manifest["artifacts"][0] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    blob = folder / entry["file"]
    blob.unlink()
    blob.write_bytes(b"other bytes")
    from cairn.portable._import import _store_artifacts

    with pytest.raises(InvalidInput, match="does not match its digest"):
        await _store_artifacts(load_export(folder), target_blobs)
    blob.unlink()
    blob.symlink_to(Path("/etc/hostname"))
    with pytest.raises(InvalidInput, match="is not a plain file"):
        await _store_artifacts(load_export(folder), target_blobs)
    assert not (tmp_path / "blobs" / "sha256").exists()


async def test_a_workspace_with_other_events_in_the_target_is_refused(
    exported: Exported, target: tuple[Settings, Connection]
) -> None:
    settings, conn = target
    ws = exported.workspace
    other = envelope(ws, "elsewhere")
    await EventStore(conn).append(
        subjects.event(ws, "experiment", "elsewhere"), [other], expected_seq=0, msg_id="other"
    )
    with pytest.raises(AlreadyExists, match="already has other events"):
        await import_workspace(
            conn, exported.folder, blobs=LocalBlobStore(settings.artifacts_path), members="keep"
        )
    held = await _held(conn, ws)
    assert len(held[EVENTS.name]) == 1 and held[METRICS.name] == []


async def test_an_export_since_a_moment_carries_on_an_earlier_import(
    ws: AsyncWorkspace,
    conn: Connection,
    target: tuple[Settings, Connection],
    tmp_path: Path,
) -> None:
    _, into = target
    exp = await ws.experiment("first-part")
    await exp.start_run()
    first = tmp_path / "first"
    await export_workspace(conn, ws.name, first, now=datetime.now(UTC))
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)  # a later server time than the moment for what follows
    run = await (await ws.experiment("second-part")).start_run()
    run.log("loss", 0.5)
    await run.flush()
    later = tmp_path / "later"
    manifest = await export_workspace(conn, ws.name, later, now=moment, since=moment)
    assert manifest.events.prev_count == load_export(first).manifest.events.count
    assert manifest.events.count > 0 and manifest.metrics.count == 1
    # not before the history it continues
    with pytest.raises(AlreadyExists, match="continues a history"):
        await import_workspace(into, later, members="keep")
    await import_workspace(into, first, members="keep")
    done = await import_workspace(into, later, members="keep")
    assert done.events == manifest.events.count and done.metrics == 1
    assert await _held(into, ws.name) == await _held(conn, ws.name)


async def test_the_command_line_exports_and_imports(
    ws: AsyncWorkspace,
    conn: Connection,
    nats_server: NatsServer,
    service_settings: Settings,
    target: tuple[Settings, Connection],
    tmp_path: Path,
) -> None:
    source = conn
    settings, conn = target
    await _make_history(ws, tmp_path)
    source_env = {
        **os.environ,
        "CAIRN_HOME": str(nats_server.home),
        "CAIRN_NATS_URL": nats_server.url,
        "CAIRN_ARTIFACTS_DIR": str(service_settings.artifacts_path),
    }
    folder = tmp_path / "cli-export"
    creds = tmp_path / "source-creds.json"
    creds.write_text(
        json.dumps({"user": service_settings.nats_user, "password": service_settings.nats_password})
    )
    args = ["export", "--workspace", ws.name, "--artifacts", "--creds", str(creds), str(folder)]
    args.append("--json")
    exported = json.loads(await cli(*args, env=source_env, cwd=tmp_path))
    assert exported["artifacts"] == 1 and exported["events"] > 0
    assert folder.stat().st_mode & 0o777 == 0o700  # the whole history: its owner's only
    target_env = {
        **os.environ,
        "CAIRN_HOME": settings.home,
        "CAIRN_NATS_URL": settings.nats_url,
        "CAIRN_ARTIFACTS_DIR": str(settings.artifacts_path),
    }
    into = tmp_path / "target-creds.json"
    into.write_text(json.dumps({"user": settings.nats_user, "password": settings.nats_password}))
    events = folder / "events.jsonl"
    whole = events.read_bytes()
    events.write_bytes(whole.replace(b'"team":"vision"', b'"team":"vandal"', 1))
    code, _, err = await run_cli(
        "import",
        "--creds",
        str(into),
        "--members",
        "keep",
        "--trust-export-key",
        str(folder),
        env=target_env,
        cwd=tmp_path,
    )
    assert code == 1 and "error [invalid_input]: the export is refused: events.jsonl line" in err
    assert "Traceback" not in err
    events.write_bytes(whole)
    checked = json.loads(
        await cli(
            "import",
            "--check",
            "--trust-export-key",
            str(folder),
            "--json",
            env=target_env,
            cwd=tmp_path,
        )
    )
    assert checked["events"] == exported["events"]
    # checked with the key the export names, which signed none of these yet: the JSON says so
    assert checked["key"].startswith("ed25519-")
    assert (checked["signed"], checked["unsigned"]) == (0, checked["events"])
    # without a key to check with, or a word that the export's own will do: refused
    code, _, err = await run_cli("import", "--check", str(folder), env=target_env, cwd=tmp_path)
    assert code == 2 and "--trust-export-key" in err
    done = json.loads(
        await cli(
            "import",
            "--creds",
            str(into),
            "--members",
            "keep",
            "--trust-export-key",
            str(folder),
            "--json",
            env=target_env,
            cwd=tmp_path,
        )
    )
    assert done["events"] == exported["events"] and done["artifacts"] == 1
    assert await _held(conn, ws.name) == await _held(source, ws.name)


async def test_the_command_line_exports_parquet_to_out_and_refuses_an_unknown_format(
    ws: AsyncWorkspace,
    nats_server: NatsServer,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    await _make_history(ws, tmp_path)
    env = {
        **os.environ,
        "CAIRN_HOME": str(nats_server.home),
        "CAIRN_NATS_URL": nats_server.url,
        "CAIRN_ARTIFACTS_DIR": str(service_settings.artifacts_path),
    }
    creds = tmp_path / "source-creds.json"
    creds.write_text(
        json.dumps({"user": service_settings.nats_user, "password": service_settings.nats_password})
    )
    base = ["export", "--workspace", ws.name, "--creds", str(creds)]
    code, _, err = await run_cli(
        *base, "--format", "csv", "--out", str(tmp_path / "csv"), env=env, cwd=tmp_path
    )
    assert code == 2 and "'csv' is not one of 'jsonl', 'parquet'" in err
    code, _, err = await run_cli(
        *base, "--out", str(tmp_path / "a"), str(tmp_path / "b"), env=env, cwd=tmp_path
    )
    assert code == 2 and "two folders given" in err
    code, _, err = await run_cli(*base, env=env, cwd=tmp_path)
    assert code == 2 and "FOLDER or --out DIR" in err
    assert not any((tmp_path / name).exists() for name in ("csv", "a", "b"))
    folder = tmp_path / "parquet-export"
    args = [*base, "--out", str(folder), "--format", "parquet", "--json"]
    exported = json.loads(await cli(*args, env=env, cwd=tmp_path))
    assert exported["format"] == "parquet" and exported["events"] > 0
    assert (folder / "events.parquet").is_file() and not (folder / "events.jsonl").exists()
    checked = json.loads(
        await cli(
            "import", "--check", "--trust-export-key", str(folder), "--json", env=env, cwd=tmp_path
        )
    )
    assert (checked["events"], checked["metrics"]) == (
        exported["events"],
        exported["metric_batches"],
    )
    assert checked["chain"] == exported["chain"]


async def test_the_sources_signed_checkpoints_are_checked_against_the_key_trusted(
    tmp_path: Path,
) -> None:
    """The source's audit service signed the workspace's chain: an export carries the
    checkpoints; an import checks them with the key trusted, and finds an export rewritten
    whole (digests, chain and manifest made to agree) by the checkpoints it no longer matches."""
    server, settings, conn = await own_server(tmp_path / "signed", request_timeout=5.0)
    settings = msgspec.structs.replace(
        settings, audit_every_events=4, audit_every_s=3600.0, state_dir=str(tmp_path / "state")
    )
    try:
        store = EventStore(conn)
        for i in range(9):
            subject = subjects.event("sg", "experiment", f"e{i}")
            await store.append(subject, [envelope("sg", f"e{i}")], expected_seq=0, msg_id=f"m{i}")
        rows = await _signed(conn, settings, 8)
        assert rows[0]["checkpoints"] == 2
        public = load_or_create_signing_key(settings).public_key()
        folder = tmp_path / "export"
        await export_workspace(
            conn, "sg", folder, now=datetime.now(UTC), audit_key=public_key_hex(public)
        )
    finally:
        await conn.close()
        server.stop()
    assert verify_export(folder, public)[1] == 8  # events 1-8 signed, the 9th not yet
    # with the key given, an unsigned tail is refused unless allowed
    with pytest.raises(InvalidInput, match="1 of its 9 events are in no checkpoint"):
        refuse_unsigned(*verify_export(folder, public))
    check = ["import", "--check", "--public-key", public_key_hex(public), str(folder)]
    code, _, err = await run_cli(*check, env=dict(os.environ), cwd=tmp_path)
    assert code == 1 and "1 of its 9 events are in no checkpoint" in err, err
    code, out, err = await run_cli(
        *check, "--allow-unsigned-tail", "--json", env=dict(os.environ), cwd=tmp_path
    )
    assert code == 0 and json.loads(out)["unsigned"] == 1, err
    assert verify_export(folder, trust_export_key=True)[1] == 8  # the key the export names
    assert verify_export(folder)[1] == 0  # no key: nothing vouched for
    # a checkpoint repeated (stored again later, its line's seq and id not signed) is not
    # counted twice: refused
    checkpoints = folder / "checkpoints.jsonl"
    signed_whole = checkpoints.read_bytes()

    def repeat(lines: list[dict[str, Any]]) -> None:
        lines.append({**lines[0], "seq": lines[-1]["seq"] + 1, "msg_id": "again"})

    _rewrite_whole(folder, "checkpoints.jsonl", repeat)
    with pytest.raises(InvalidInput, match=r"line 3: checkpoint 1 does not follow 2"):
        verify_export(folder, public)
    _rewrite_whole(folder, "checkpoints.jsonl", lambda lines: lines.pop())
    assert checkpoints.read_bytes() == signed_whole
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(InvalidInput, match="not by the key trusted"):
        verify_export(folder, stranger)
    # rewritten whole: every digest and chain hash made to agree again, and the manifest
    events = folder / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    lines[1]["data"]["actor"] = "mallory"
    manifest = json.loads((folder / "manifest.json").read_text())
    chain = manifest["events"]["prev_chain"]
    body = b""
    for line in lines:
        raw = json.dumps(line["data"], separators=(",", ":")).encode()
        line["digest"] = event_digest(line["subject"], line["msg_id"], raw)
        chain = line["chain"] = chain_step(chain, line["seq"], line["digest"])
        body += json.dumps(line, separators=(",", ":")).encode() + b"\n"
    events.write_bytes(body)
    manifest["events"]["chain"] = chain
    manifest["events"]["sha256"] = hashlib.sha256(body).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    load_export(folder)  # consistent in itself
    with pytest.raises(InvalidInput, match=r"checkpoint 1 disagrees with the events at seq 1-"):
        verify_export(folder, public)


async def _signed(conn: Connection, settings: Settings, events: int) -> list[dict[str, object]]:
    """The source's audit service run until ``events`` events are signed."""
    audit = AuditService(conn, settings, poll_s=0.02)
    await audit.start()
    stop = asyncio.Event()
    task = asyncio.create_task(audit.run(stop))
    public = load_or_create_signing_key(settings).public_key()
    try:
        for _ in range(500):
            rows = await verify_log(conn, public)
            if rows and int(str(rows[0]["events"])) - int(str(rows[0]["uncovered"])) >= events:
                return rows
            await asyncio.sleep(0.02)
        raise AssertionError(f"not signed in time: {rows}")
    finally:
        stop.set()
        await task


async def test_two_imports_of_one_export_at_once_store_it_once_in_its_order(
    exported: Exported, target: tuple[Settings, Connection]
) -> None:
    """Each append expects the last of all the workspace's messages in the target: two
    importers cannot interleave the export's events in another order; each finds the other's
    appends to be its own and goes on."""
    settings, conn = target
    blobs = LocalBlobStore(settings.artifacts_path)
    first, second = await asyncio.gather(
        import_workspace(conn, exported.folder, blobs=blobs, members="keep"),
        import_workspace(conn, exported.folder, blobs=blobs, members="keep"),
    )
    n_events = len(exported.source[EVENTS.name])
    assert first.events == second.events == n_events  # each stored or found every one
    assert await _held(conn, exported.workspace) == exported.source


async def test_a_workspace_without_events_is_not_exported(conn: Connection, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="has no events"):
        await export_workspace(conn, "nosuchworkspace", tmp_path / "x", now=datetime.now(UTC))
    assert not (tmp_path / "x").exists()


def _rewrite_whole(folder: Path, file: str, edit: object) -> None:
    """Edit one lines file's parsed lines with ``edit`` and make the export agree with itself
    again (digests, chain hashes, counts, the manifest's hashes): only the checks on what the
    lines mean can refuse it then."""
    assert callable(edit)
    path = folder / file
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    edit(lines)
    manifest = json.loads((folder / "manifest.json").read_text())
    part = {"events.jsonl": "events", "metrics.jsonl": "metrics"}.get(file, "checkpoints")
    chain = manifest["events"]["prev_chain"]
    body = b""
    for line in lines:
        raw = json.dumps(line["data"], separators=(",", ":")).encode()
        line["digest"] = event_digest(line["subject"], line["msg_id"], raw)
        if part == "events":
            chain = line["chain"] = chain_step(chain, line["seq"], line["digest"])
        body += json.dumps(line, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(body)
    if part == "events":
        manifest["events"]["chain"] = chain
    manifest[part]["count"] = len(lines)
    manifest[part]["sha256"] = hashlib.sha256(body).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_metric_batches_of_another_workspace_or_run_are_refused(
    exported: Exported, tmp_path: Path
) -> None:
    """The ingester and the read models go by a batch's own workspace and run fields."""
    folder = _copy(exported, tmp_path)
    metrics = folder / "metrics.jsonl"
    whole = metrics.read_bytes()

    def other_workspace(lines: list[dict[str, Any]]) -> None:
        lines[0]["data"]["workspace"] = "victim"

    _rewrite_whole(folder, "metrics.jsonl", other_workspace)
    with pytest.raises(InvalidInput, match=r"metrics\.jsonl line 1: a batch of victim/"):
        verify_export(folder)
    metrics.write_bytes(whole)
    folder = _copy(exported, tmp_path / "b")

    def other_run(lines: list[dict[str, Any]]) -> None:
        lines[0]["data"]["run_id"] = "another"

    _rewrite_whole(folder, "metrics.jsonl", other_run)
    with pytest.raises(InvalidInput, match=r"line 1: a batch of .*/another on"):
        verify_export(folder)
    folder = _copy(exported, tmp_path / "c")

    def wildcard(lines: list[dict[str, Any]]) -> None:
        lines[0]["subject"] = f"cairn.metrics.{exported.workspace}.>"

    _rewrite_whole(folder, "metrics.jsonl", wildcard)
    with pytest.raises(InvalidInput, match=r"metrics\.jsonl line 1: .*must match"):
        verify_export(folder)
    folder = _copy(exported, tmp_path / "d")

    def not_a_batch(lines: list[dict[str, Any]]) -> None:
        lines[0]["data"] = {"anything": 1}

    _rewrite_whole(folder, "metrics.jsonl", not_a_batch)
    with pytest.raises(InvalidInput, match=r"line 1: not a metric batch"):
        verify_export(folder)


def test_events_are_decoded_whole_and_of_their_aggregates_kind(
    exported: Exported, tmp_path: Path
) -> None:
    def audit(lines: list[dict[str, Any]]) -> None:
        ws = exported.workspace
        lines[1]["subject"] = f"cairn.ev.{ws}.audit.chain"
        lines[1]["data"].update(type="ChainCheckpointed", aggregate_kind="audit")
        lines[1]["data"]["aggregate_id"] = "chain"

    def other_kind(lines: list[dict[str, Any]]) -> None:
        data = lines[1]["data"]
        data["aggregate_kind"] = "model"
        lines[1]["subject"] = f"cairn.ev.{exported.workspace}.model.{data['aggregate_id']}"

    def bad_body(lines: list[dict[str, Any]]) -> None:
        lines[1]["data"]["data"] = {"no": "such fields"}

    for n, (edit, refusal) in enumerate(
        [
            (audit, "line 2: "),
            (other_kind, r"line 2: \w+ is an event of a \w+, not of model"),
            (bad_body, "line 2: not an event this Cairn reads"),
        ]
    ):
        folder = _copy(exported, tmp_path / str(n))
        _rewrite_whole(folder, "events.jsonl", edit)
        with pytest.raises(InvalidInput, match=refusal):
            verify_export(folder)


def test_numbers_hashes_ids_and_sizes_are_checked_on_load(
    exported: Exported, tmp_path: Path
) -> None:
    """Each refused as the malformed export it is, before any import starts."""

    def manifest_edit(folder: Path, part: str, key: str, value: object) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest[part][key] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))

    for n, (part, key, value) in enumerate(
        [
            ("events", "prev_chain", "zz" * 32),
            ("events", "prev_count", -1),
            ("metrics", "count", -3),
            ("events", "prev_last", "not hex"),
        ]
    ):
        folder = _copy(exported, tmp_path / f"m{n}")
        manifest_edit(folder, part, key, value)
        with pytest.raises(InvalidInput, match=r"manifest\.json is malformed"):
            verify_export(folder)

    def seq(lines: list[dict[str, Any]]) -> None:
        lines[0]["seq"] = -1

    def spaced_id(lines: list[dict[str, Any]]) -> None:
        lines[0]["msg_id"] = lines[0]["msg_id"] + " "

    def long_id(lines: list[dict[str, Any]]) -> None:
        lines[0]["msg_id"] = "x" * 257

    def large(lines: list[dict[str, Any]]) -> None:
        lines[0]["data"]["actor"] = "k" * (1024 * 1024)

    def huge(lines: list[dict[str, Any]]) -> None:
        lines[0]["data"]["actor"] = "k" * (2 * 1024 * 1024)

    for n, (file, edit, refusal) in enumerate(
        [
            ("metrics.jsonl", seq, "line 1: malformed"),
            ("events.jsonl", spaced_id, "line 1: malformed"),
            ("metrics.jsonl", long_id, "line 1: malformed"),
            ("metrics.jsonl", large, "line 1: .* bytes of data exceed METRICS's limit"),
            ("metrics.jsonl", huge, "line 1: longer than METRICS could store"),
        ]
    ):
        folder = _copy(exported, tmp_path / f"l{n}")
        _rewrite_whole(folder, file, edit)
        with pytest.raises(InvalidInput, match=refusal):
            verify_export(folder)


async def test_membership_events_travel_only_when_asked(
    exported: Exported, target: tuple[Settings, Connection]
) -> None:
    """A member of the source is one in the target only with --members keep."""
    settings, conn = target
    blobs = LocalBlobStore(settings.artifacts_path)
    with pytest.raises(InvalidInput, match="--members keep"):
        await import_workspace(conn, exported.folder, blobs=blobs)
    assert await _held(conn, exported.workspace) == {EVENTS.name: [], METRICS.name: []}
    done = await import_workspace(conn, exported.folder, blobs=blobs, members="drop")
    assert done.members_dropped >= 1
    held = await _held(conn, exported.workspace)
    types = [json.loads(data)["type"] for _, data in held[EVENTS.name]]
    assert "WorkspaceCreated" in types and "MemberAdded" not in types
    assert len(types) == len(exported.source[EVENTS.name]) - done.members_dropped
    again = await import_workspace(conn, exported.folder, blobs=blobs, members="drop")
    assert (again.events, again.events_present) == (0, len(types))


async def test_an_import_is_refused_while_the_targets_services_run_and_passes_over_its_audit(
    exported: Exported, tmp_path: Path
) -> None:
    """The whole stack running in the target: refused, nothing stored. Every service stopped
    but the audit service, which signs a checkpoint after every event: the import moves past
    each checkpoint it finds in its way, and the target holds the export in its order."""
    server, settings, conn = await own_server(tmp_path / "live", request_timeout=5.0)
    settings = msgspec.structs.replace(
        settings,
        state_dir=str(tmp_path / "live" / "state"),
        artifacts_dir=str(tmp_path / "live" / "artifacts"),
        audit_every_events=1,
        audit_every_s=0.05,
    )
    blobs = LocalBlobStore(settings.artifacts_path)
    try:
        stop, ready = asyncio.Event(), asyncio.Event()
        stack = asyncio.create_task(
            run_services(settings, list(all_services().values()), stop=stop, ready=ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 30)
            with pytest.raises(Unavailable, match="the target's services are running"):
                await import_workspace(conn, exported.folder, blobs=blobs, members="keep")
        finally:
            stop.set()
            await stack
        assert await _held(conn, exported.workspace) == {EVENTS.name: [], METRICS.name: []}
        audit = AuditService(conn, settings, poll_s=0.01)
        await audit.start()
        stop = asyncio.Event()
        task = asyncio.create_task(audit.run(stop))
        try:
            done = await import_workspace(conn, exported.folder, blobs=blobs, members="keep")
        finally:
            stop.set()
            await task
        assert done.events == len(exported.source[EVENTS.name])
        assert await _held(conn, exported.workspace) == exported.source
        stored = await _stored(conn, EVENTS.name, subjects.events_of_workspace(exported.workspace))
        assert any(".audit." in m.subject for m in stored)
    finally:
        await conn.close()
        server.stop()


async def test_a_checkpoint_of_the_target_in_the_way_is_passed_over(
    exported: Exported, target: tuple[Settings, Connection]
) -> None:
    """Its append refused by the CAS because the target's audit service stored a checkpoint
    since, the import expects that checkpoint's sequence and tries again."""
    from cairn.portable._import import _publish

    _, conn = target
    ws = exported.workspace
    store = EventStore(conn)
    await store.publish(subjects.audit_chain(ws), b"{}", msg_id="theirs")
    lines = load_export(exported.folder).events
    await _publish(store, subjects.events_of_workspace(ws), lines[:3], [])
    stored = await _stored(conn, EVENTS.name, subjects.events_of_workspace(ws))
    assert [m.msg_id for m in stored] == ["theirs", *(line.msg_id for line in lines[:3])]
    # another message of the workspace in the way is not passed over
    await store.publish(subjects.event(ws, "experiment", "x"), b"{}", msg_id="other")
    with pytest.raises(ConcurrencyConflict, match="is not the export's"):
        await _publish(store, subjects.events_of_workspace(ws), lines[3:4], stored)


async def test_the_command_line_imports_into_a_stopped_home_with_its_server_alone(
    tmp_path: Path,
) -> None:
    """A home whose stack is stopped: 'cairn import' starts its server alone (no services,
    as an import needs), stores the export, and stops the server again."""
    server, _, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    await conn.close()
    server.stop()
    env = {**os.environ, "CAIRN_HOME": str(server.home)}
    env.pop("CAIRN_NATS_URL", None)
    history = str(Path(__file__).parent / "golden" / "v1" / "history")
    args = ["import", "--trust-export-key", "--members", "keep", history, "--json"]
    done = json.loads(await cli(*args, env=env, cwd=tmp_path))
    assert done["events"] == load_export(Path(history)).manifest.events.count
    assert server.running_pid() is None
    again = json.loads(await cli(*args, env=env, cwd=tmp_path))
    assert (again["events"], again["events_present"]) == (0, done["events"])


def test_an_import_stores_only_the_lines_it_checked(exported: Exported, tmp_path: Path) -> None:
    """The import checks the export whole keeping no data, then reads each line again as it
    stores it: a line changed in between (even made consistent again) is refused there."""
    from cairn.portable._import import _again

    folder = _copy(exported, tmp_path)
    loaded = load_export(folder, data=False)
    assert all(bytes(line.data) == b"null" for line in loaded.events)
    assert [line.digest for line in _again(loaded, "events.jsonl", loaded.events)] == [
        line.digest for line in loaded.events
    ]

    def retag(lines: list[dict[str, Any]]) -> None:
        lines[2]["data"]["actor"] = "mallory"

    _rewrite_whole(folder, "events.jsonl", retag)
    again = _again(loaded, "events.jsonl", loaded.events)
    assert next(again).seq == loaded.events[0].seq
    next(again)
    with pytest.raises(InvalidInput, match=r"events\.jsonl changed while it was imported"):
        next(again)
