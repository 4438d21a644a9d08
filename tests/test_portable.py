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
from cairn.embedded._up import read_models
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.portable import export_workspace, import_workspace, load_export, verify_export
from cairn.portable._export import _stored
from cairn.projection import replay, replay_offline
from cairn.proto import subjects
from cairn.proto.streams import EVENTS, METRICS
from cairn.sdk import AsyncWorkspace
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
    ws: AsyncWorkspace, conn: Connection, service_settings: Settings, tmp_path: Path
) -> Exported:
    await _make_history(ws, tmp_path)
    folder = tmp_path / "export"
    blobs = LocalBlobStore(service_settings.artifacts_path)
    manifest = await export_workspace(conn, ws.name, folder, now=datetime.now(UTC), blobs=blobs)
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


async def test_an_import_into_a_fresh_home_replays_to_the_same_read_models(
    exported: Exported, target: tuple[Settings, Connection], tmp_path: Path
) -> None:
    settings, conn = target
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
    events.write_bytes(whole)
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"manifest\.json is malformed"):
        verify_export(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(InvalidInput, match="holds no export"):
        verify_export(folder)


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
    assert verify_export(folder, trust_export_key=True)[1] == 8  # the key the export names
    assert verify_export(folder)[1] == 0  # no key: nothing vouched for
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
