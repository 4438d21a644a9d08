"""Whole-store backups (``cairn backup`` / ``cairn restore``, cairn.backup) against real
servers: a backup taken while runs are created and metrics logged restores into a fresh
server with the same sequences, message ids and read models, and the restored store goes on
(a model's next version is the next number); bad backups and occupied targets are refused
before anything changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.backup import (
    MANIFEST,
    BackupDirNotEmpty,
    BackupError,
    ChecksumMismatch,
    ManifestMissing,
    StreamNotEmpty,
    backup,
    read_manifest,
    restore,
    verify_files,
    verify_read_models,
)
from cairn.bus import Connection, connect, provision
from cairn.bus._snapshot import (
    delete_stream,
    purge_stream,
    restore_stream,
    snapshot_stream,
    stream_info,
)
from cairn.embedded import NatsServer
from cairn.embedded._auth import ADMIN_USER
from cairn.embedded._up import all_services, read_models
from cairn.errors import NotFound, PermissionDenied
from cairn.proto.streams import EVENTS, JOBS, LOGS, METRICS
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.settings import Settings
from cairn.storage import S3BlobStore, digest_of_file
from tests.conftest import settings_for
from tests.test_cli import run_cli


def _admin_settings(server: NatsServer, **extra: object) -> Settings:
    return msgspec.structs.replace(
        settings_for(server, service=True, request_timeout=10.0, **extra),
        nats_user=ADMIN_USER,
        nats_password=server.admin_password,
    )


@contextlib.asynccontextmanager
async def _server(home: Path) -> AsyncIterator[tuple[NatsServer, Connection]]:
    """A server over its own home, not provisioned, and a connection to it as the admin."""
    server = NatsServer(home, port=0)
    await server.start()
    try:
        conn = await connect(_admin_settings(server))
        try:
            yield server, conn
        finally:
            await conn.close()
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _services(server: NatsServer, home: Path) -> AsyncIterator[Settings]:
    """Every service over ``server`` (they provision what is missing), as ``cairn up`` runs
    them; their state and artifacts under ``home``."""
    settings = settings_for(
        server,
        service=True,
        state_dir=str(home / "state"),
        artifacts_dir=str(home / "artifacts"),
        request_timeout=10.0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_services(settings, list(all_services().values()), stop=stop, ready=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield settings
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def _person(server: NatsServer, ws_name: str) -> AsyncIterator[AsyncWorkspace]:
    settings = settings_for(server, service=False, request_timeout=10.0)
    conn = await connect(settings)
    ws = AsyncWorkspace(conn, ws_name, settings)
    try:
        yield ws
    finally:
        await ws.close()
        await conn.close()


async def _load(ws: AsyncWorkspace, stop: asyncio.Event, made: list[str]) -> None:
    """Write load: runs created, metrics logged, runs completed, until ``stop``."""
    experiment = await ws.experiment("load")
    while not stop.is_set():
        run = await experiment.start_run()
        for step in range(20):
            run.log("loss", 1.0 / (step + 1), step=step)
        await run.complete()
        made.append(run.id)


async def _raw(conn: Connection, stream: str, seq: int) -> dict[str, Any]:
    """The stored message as the server keeps it: subject, headers, body and its time."""
    reply = await conn.nc.request(
        f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode(), timeout=10
    )
    message: dict[str, Any] = json.loads(reply.data)["message"]
    return message


@pytest.mark.timeout(600)
async def test_a_backup_under_write_load_restores_into_a_fresh_server(tmp_path: Path) -> None:
    ws_name = "bk" + uuid.uuid4().hex[:8]
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server_a, admin_a):
        async with _services(server_a, tmp_path / "a") as settings_a:
            async with _person(server_a, ws_name) as ws:
                await ws.create("backed up")
                run = await (await ws.experiment("train")).start_run()
                model = tmp_path / "model.bin"
                model.write_bytes(b"weights " * 1000)
                await run.upload_file("outputs/model.bin", model)
                await run.complete()
                for _ in range(2):
                    await ws.models.register("churn", "outputs/model.bin", run_id=run.id)
                stop, made = asyncio.Event(), []
                load = asyncio.create_task(_load(ws, stop, made))
                while len(made) < 2:  # the load is under way before the backup starts
                    await asyncio.sleep(0.05)
                try:
                    manifest = await backup(admin_a, folder, settings_a, read_models=read_models())
                finally:
                    stop.set()
                    await load
                assert len(made) >= 2
        events = next(e for e in manifest.streams if e.name == EVENTS.name)
        before = [await _raw(admin_a, EVENTS.name, s) for s in (1, events.last_seq)]
        live_hashes = await verify_read_models(admin_a, manifest, read_models())

    # the manifest says what it holds, in order: the other streams first, EVENTS last
    names = [e.name for e in manifest.streams]
    assert names[0] == METRICS.name and names[-1] == EVENTS.name
    assert {"KV_cairn_agents", "KV_cairn_job_leases"} <= set(names)
    assert manifest.skipped == ("JOBS",)
    assert set(manifest.read_models) == set(read_models())
    assert manifest.artifacts is not None and manifest.artifacts.blobs >= 1
    assert json.loads((folder / MANIFEST).read_text())["streams"][-1]["name"] == "EVENTS"
    assert all(row["same"] for row in live_hashes)  # the recorded positions hold still

    async with _server(tmp_path / "b") as (server_b, admin_b):
        settings_b = settings_for(
            server_b, service=True, artifacts_dir=str(tmp_path / "b" / "artifacts")
        )
        await restore(admin_b, folder, settings_b)
        for entry in manifest.streams:  # every stream reaches its recorded position
            info = await stream_info(admin_b, entry.name)
            assert info is not None and info["state"]["last_seq"] >= entry.last_seq
        # the same messages at the same sequences: subject, body, headers (message ids)
        after = [await _raw(admin_b, EVENTS.name, s) for s in (1, events.last_seq)]
        assert after == before
        assert all(m["hdrs"] and m["time"] for m in before)  # message ids and times, kept
        rows = await verify_read_models(admin_b, manifest, read_models())
        assert [r["read_model"] for r in rows if not r["same"]] == []
        assert len(rows) == len(read_models())

        # the restored store goes on: the next version of the model is 3, never 1 again
        async with _services(server_b, tmp_path / "b"):
            async with _person(server_b, ws_name) as ws:
                record = await ws.models.register("churn", "outputs/model.bin", run_id=run.id)
                assert record["version"] == 3
                listed = await ws.models.list("churn")
                assert sorted(r["version"] for r in listed) == [1, 2, 3]
                ran = await ws.runs("load", limit=None)
                assert {r["run_id"] for r in ran} >= set(made[:1])


async def _small_backup(server: NatsServer, admin: Connection, folder: Path) -> None:
    settings = settings_for(server, service=True, artifacts_dir=str(folder.parent / "none"))
    await provision(admin)
    for i in range(20):
        await admin.js.publish(f"cairn.ev.w1.run.r{i % 3}", b"{}", headers={"Nats-Msg-Id": f"m{i}"})
        await admin.js.publish(f"cairn.metrics.w1.r{i % 3}", b"[]")
    await backup(admin, folder, settings)


async def test_a_tampered_snapshot_is_refused_before_anything_changes(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
    snapshot = folder / "streams" / "METRICS.tar.s2"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0x01
    snapshot.write_bytes(bytes(data))
    async with _server(tmp_path / "b") as (server_b, admin_b):
        settings = settings_for(server_b, service=True)
        with pytest.raises(ChecksumMismatch, match="stream METRICS") as caught:
            await restore(admin_b, folder, settings)
        assert caught.value.stream == "METRICS"
        for name in ("EVENTS", "METRICS", "LOGS"):  # nothing was restored, nothing made
            assert await stream_info(admin_b, name) is None


async def test_a_folder_without_a_manifest_is_no_backup(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
        (folder / MANIFEST).unlink()
        with pytest.raises(ManifestMissing, match=r"manifest\.json is missing"):
            await restore(admin, folder, settings_for(server, service=True))
    (folder / MANIFEST).write_text('{"format": 1}')
    with pytest.raises(BackupError, match="not a backup manifest"):
        read_manifest(folder)


async def test_a_backup_goes_into_a_new_or_empty_folder_only(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    async with _server(tmp_path / "a") as (server, admin):
        with pytest.raises(BackupDirNotEmpty, match="not an empty folder"):
            await _small_backup(server, admin, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


async def test_restore_onto_a_store_with_data_is_refused_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
        await admin.js.publish("cairn.ev.w1.run.r9", b"{}")  # written after the backup
        settings = settings_for(server, service=True)
        with pytest.raises(
            StreamNotEmpty, match=r"stream METRICS already holds .* seq 20"
        ) as caught:
            await restore(admin, folder, settings)
        assert caught.value.stream == "METRICS"
        info = await stream_info(admin, EVENTS.name)
        assert info is not None and info["state"]["messages"] == 21  # nothing was deleted
        await admin.js.publish("cairn.jobs.w1.local", b"{}")  # a ticket of the replaced log
        await restore(admin, folder, settings, force=True)
        info = await stream_info(admin, EVENTS.name)
        assert info is not None and info["state"]["messages"] == 20  # as backed up
        jobs = await stream_info(admin, JOBS.name)
        assert jobs is not None and jobs["state"]["messages"] == 0  # purged when forced


async def test_a_stream_with_history_but_no_messages_is_not_empty(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
    async with _server(tmp_path / "b") as (server_b, admin_b):
        await provision(admin_b)
        await admin_b.js.publish("cairn.logs.w1.r1", b"a line")
        await purge_stream(admin_b, LOGS.name)
        info = await stream_info(admin_b, LOGS.name)
        assert info is not None and info["state"]["messages"] == 0
        _edit_manifest(folder, lambda m: m.update(server_version="2.9.0"))
        said: list[str] = []
        with pytest.raises(StreamNotEmpty, match="stream LOGS already holds messages up to seq 1"):
            await restore(admin_b, folder, settings_for(server_b, service=True), say=said.append)
        assert said[0].startswith("warning: the backup was taken from nats-server 2.9.0;")


async def test_only_the_admin_may_snapshot_restore_or_delete_a_stream(tmp_path: Path) -> None:
    """The server refuses the services' user (a permissions violation the connection sees,
    not a bare timeout), and the stream is left as it was."""
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, tmp_path / "backup")
        info = await stream_info(admin, METRICS.name)
        assert info is not None
        service = await connect(settings_for(server, service=True, request_timeout=2.0))
        try:
            with (tmp_path / "x").open("wb") as out:
                with pytest.raises(PermissionDenied, match="admin's alone"):
                    await snapshot_stream(service, EVENTS.name, out)
            assert service.denied(f"$JS.API.STREAM.SNAPSHOT.{EVENTS.name}")
            with pytest.raises(PermissionDenied, match="admin's alone"):
                await delete_stream(service, METRICS.name)
            assert service.denied(f"$JS.API.STREAM.DELETE.{METRICS.name}")
            config = {**info["config"], "name": "COPY", "subjects": ["copy.>"]}
            with (tmp_path / "backup" / "streams" / "METRICS.tar.s2").open("rb") as source:
                with pytest.raises(PermissionDenied, match="admin's alone"):
                    await restore_stream(service, config, info["state"], source)
            assert service.denied("$JS.API.STREAM.RESTORE.COPY")
        finally:
            await service.close()
        after = await stream_info(admin, METRICS.name)
        assert after is not None and after["state"]["messages"] == 20
        assert await stream_info(admin, "COPY") is None


def _env(home: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    return {**keep, "CAIRN_HOME": str(home), "CAIRN_LOG_FORMAT": "json", **extra}


async def test_the_commands_back_up_a_running_home_and_restore_into_a_fresh_one(
    tmp_path: Path,
) -> None:
    """``cairn backup`` as the admin of the home whose server runs; ``cairn restore`` into a
    home that has never run: it starts that home's server alone, restores, verifies the read
    models and stops it, and the streams are there when the server starts again."""
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, tmp_path / "first")
        env = _env(server.home, CAIRN_NATS_URL=server.url)
        code, out, err = await run_cli("backup", str(folder), "--json", env=env, cwd=tmp_path)
        assert code == 0, err[-2000:]
        manifest = json.loads(out)
        assert [s["name"] for s in manifest["streams"]][-1] == "EVENTS"
        assert manifest["read_models"]["tracking"]["last_seq"] == 20

        again = await run_cli("backup", str(folder), env=env, cwd=tmp_path)
        assert again[0] == 1 and "is not an empty folder" in again[2]

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    with (tampered / "streams" / "EVENTS.tar.s2").open("ab") as f:
        f.write(b"\0")
    untouched = tmp_path / "untouched"
    code, _, err = await run_cli("restore", str(tampered), env=_env(untouched), cwd=tmp_path)
    assert code == 1 and "stream EVENTS" in err and "does not match the manifest" in err
    assert not untouched.exists()  # refused before a server was started there

    fresh = tmp_path / "b"
    code, out, err = await run_cli("restore", str(folder), "--json", env=_env(fresh), cwd=tmp_path)
    assert code == 0, err[-2000:]
    result = json.loads(out)
    assert result["restored"][-1] == "EVENTS"
    assert result["read_models"] and all(r["same"] for r in result["read_models"])
    assert NatsServer(fresh, port=0).running_pid() is None  # stopped after the restore
    code, _, err = await run_cli("restore", str(folder), env=_env(fresh), cwd=tmp_path)
    assert code == 1 and "already holds" in err and "stream METRICS" in err
    async with _server(fresh) as (_, conn):
        info = await stream_info(conn, EVENTS.name)
        assert info is not None and info["state"]["last_seq"] == 20


async def test_a_snapshot_that_unpacks_to_far_more_than_its_size_restores(tmp_path: Path) -> None:
    """Repetitive messages compress a hundredfold; the server unpacks each restore chunk
    before it answers and gives the restore up after 5 s, which one large chunk of 12,000
    of them took."""
    folder = tmp_path / "backup"
    body = b"0.5," * 500
    async with _server(tmp_path / "a") as (server, admin):
        await provision(admin)
        for first in range(0, 12_000, 500):
            subjects = [f"cairn.metrics.w1.r{i % 7}" for i in range(first, first + 500)]
            await asyncio.gather(*(admin.js.publish(s, body) for s in subjects))
        await admin.js.publish("cairn.ev.w1.run.r1", b"{}")
        await backup(admin, folder, settings_for(server, service=True))
    entry = next(e for e in read_manifest(folder).streams if e.name == METRICS.name)
    assert entry.size * 20 < entry.messages * len(body)
    async with _server(tmp_path / "b") as (server_b, admin_b):
        await restore(admin_b, folder, settings_for(server_b, service=True))
        info = await stream_info(admin_b, METRICS.name)
        assert info is not None and info["state"]["messages"] == 12_000
        last = await admin_b.js.get_msg(METRICS.name, 12_000)
        assert last.data == body


async def test_with_s3_artifacts_the_backup_holds_their_index_only(
    tmp_path: Path, seaweed: Any
) -> None:
    """The bucket is backed up with S3's own tools; the backup indexes its blobs, and a
    restore reports the indexed blobs the store lacks."""
    bucket = "b-backup-" + uuid.uuid4().hex[:8]
    config = seaweed.config(bucket, prefix="cairn/")
    store = await S3BlobStore.open(config)
    try:
        await store.client.create_bucket(Bucket=bucket)
        blob = tmp_path / "blob"
        blob.write_bytes(b"model weights")
        digest = digest_of_file(blob)
        await store.put_file(digest, blob)
    finally:
        await store.close()
    folder = tmp_path / "backup"
    said: list[str] = []
    async with _server(tmp_path / "a") as (server, admin):
        await provision(admin)
        await admin.js.publish("cairn.ev.w1.run.r1", b"{}")
        settings = settings_for(server, service=True, artifact_s3=msgspec.to_builtins(config))
        manifest = await backup(admin, folder, settings)
        assert manifest.artifacts is not None
        assert (manifest.artifacts.backend, manifest.artifacts.copied) == ("s3", False)
        index = json.loads((folder / "artifacts" / "index.json").read_text())
        assert index == [{"digest": digest, "size": len(b"model weights")}]
        assert not (folder / "artifacts" / "sha256").exists()
        other = msgspec.to_builtins(seaweed.config(bucket, prefix="elsewhere/"))
        elsewhere = settings_for(server, service=True, artifact_s3=other)
        await restore(admin, folder, elsewhere, force=True, say=said.append)
    assert (
        said[-1] == f"artifacts: 1 of 1 indexed blobs are not in the artifact store, e.g. {digest}"
    )


async def test_the_commands_start_no_server_in_a_home_that_has_none(tmp_path: Path) -> None:
    """A client's home (its settings name a server elsewhere) is left as it is: the
    commands ask for the admin's credentials instead of starting an empty server there."""
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
    home = tmp_path / "client"
    home.mkdir()
    (home / "config.json").write_text('{"nats_url": "nats://127.0.0.1:1"}')
    for command, target in (("backup", tmp_path / "new"), ("restore", folder)):
        code, _, err = await run_cli(command, str(target), env=_env(home), cwd=tmp_path)
        assert code == 1 and "holds no server of its own" in err, err
    assert sorted(p.name for p in home.iterdir()) == ["config.json"]


async def test_a_snapshot_past_the_servers_window_is_acknowledged_chunk_by_chunk(
    tmp_path: Path,
) -> None:
    """50 MiB of incompressible messages: the server stops sending past its window of
    unanswered chunks, so the backup finishes only because each chunk is answered; the
    restored stream holds the same last message."""
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await provision(admin)
        for _ in range(10):
            bodies = [os.urandom(256 * 1024) for _ in range(20)]
            await asyncio.gather(
                *(admin.js.publish(f"cairn.metrics.w1.r{i}", b) for i, b in enumerate(bodies))
            )
        await admin.js.publish("cairn.ev.w1.run.r1", b"{}")
        last = await admin.js.get_msg(METRICS.name, 200)
        await backup(admin, folder, settings_for(server, service=True))
    entry = next(e for e in read_manifest(folder).streams if e.name == METRICS.name)
    assert entry.size > 48 * 1024 * 1024 and entry.messages == 200
    async with _server(tmp_path / "b") as (server_b, admin_b):
        await restore(admin_b, folder, settings_for(server_b, service=True))
        assert (await admin_b.js.get_msg(METRICS.name, 200)).data == last.data


def _edit_manifest(folder: Path, edit: Any) -> None:
    raw = json.loads((folder / MANIFEST).read_text())
    edit(raw)
    (folder / MANIFEST).write_text(json.dumps(raw))


def _events_entry(raw: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in raw["streams"] if e["name"] == "EVENTS")
    return entry


_BAD_MANIFESTS: dict[str, tuple[Any, str]] = {
    "file outside": (
        lambda m: _events_entry(m).update(file="../../x"),
        "names file '../../x'",
    ),
    "absolute file": (
        lambda m: _events_entry(m).update(file="/etc/passwd"),
        "names file '/etc/passwd'",
    ),
    "name with a dot": (
        lambda m: _events_entry(m).update(name="EV.ENTS", file="streams/EV.ENTS.tar.s2"),
        "stream entry 'EV.ENTS'",
    ),
    "config of another stream": (
        lambda m: _events_entry(m)["config"].update(name="METRICS"),
        "configuration names another",
    ),
    "EVENTS made deletable": (
        lambda m: _events_entry(m)["config"].update(deny_delete=False),
        "EVENTS with deny_delete False",
    ),
    "EVENTS with other subjects": (
        lambda m: _events_entry(m)["config"].update(subjects=["cairn.>"]),
        "EVENTS with subjects",
    ),
    "republished elsewhere": (
        lambda m: _events_entry(m)["config"].update(republish={"src": ">", "dest": "x.>"}),
        "sets \\['republish'\\]",
    ),
    "a stream twice": (
        lambda m: m["streams"].append(m["streams"][0]),
        "named twice",
    ),
    "wrong field type": (
        lambda m: _events_entry(m).update(last_seq="20"),
        "not a backup manifest",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_MANIFESTS))
async def test_an_edited_manifest_is_refused(
    case: str, tmp_path_factory: pytest.TempPathFactory, small_backup: Path
) -> None:
    folder = tmp_path_factory.mktemp("edited") / "backup"
    shutil.copytree(small_backup, folder)
    edit, message = _BAD_MANIFESTS[case]
    _edit_manifest(folder, edit)
    with pytest.raises(BackupError, match=message):
        read_manifest(folder)


async def test_a_hostile_artifact_index_is_refused(tmp_path: Path, small_backup: Path) -> None:
    folder = tmp_path / "backup"
    shutil.copytree(small_backup, folder)
    index = folder / "artifacts" / "index.json"
    index.write_text('[{"digest": "sha256:../../../etc", "size": 1}]')
    digest = digest_of_file(index).removeprefix("sha256:")
    _edit_manifest(folder, lambda m: m["artifacts"].update(sha256=digest))
    with pytest.raises(BackupError, match="artifact index"):
        verify_files(folder, read_manifest(folder))


@pytest.fixture(scope="module")
async def small_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small backup with one local artifact, taken once for the checks that only read it."""
    root = tmp_path_factory.mktemp("small")
    blob = root / "artifacts" / "sha256" / "ab"
    async with _server(root / "a") as (server, admin):
        settings = settings_for(server, service=True, artifacts_dir=str(root / "artifacts"))
        await provision(admin)
        await admin.js.publish("cairn.ev.w1.run.r1", b"{}")
        data = b"weights"
        digest = hashlib.sha256(data).hexdigest()
        blob = root / "artifacts" / "sha256" / digest[:2] / digest[2:4] / digest
        blob.parent.mkdir(parents=True)
        blob.write_bytes(data)
        await backup(admin, root / "backup", settings)
    return root / "backup"


def test_a_backup_is_private_to_its_owner(small_backup: Path) -> None:
    """Folders 0700, files 0600: a backup holds every secret the log holds."""
    wrong = [
        (str(p.relative_to(small_backup)), oct(p.stat().st_mode & 0o777))
        for p in [small_backup, *small_backup.rglob("*")]
        if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)
    ]
    assert wrong == []
    assert (small_backup / "artifacts" / "index.json").is_file()


async def test_a_failed_backup_leaves_the_folder_as_it_found_it(tmp_path: Path) -> None:
    """A snapshot refused part-way (here: no EVENTS stream) removes what the run wrote:
    the folder it made, or the contents of the empty one it was given."""
    async with _server(tmp_path / "a") as (server, admin):
        settings = settings_for(server, service=True, artifacts_dir=str(tmp_path / "none"))
        await provision(admin)
        await delete_stream(admin, EVENTS.name)
        given = tmp_path / "given"
        given.mkdir()
        for folder in (tmp_path / "new", given):
            with pytest.raises(NotFound, match="no EVENTS stream"):
                await backup(admin, folder, settings)
        assert not (tmp_path / "new").exists()
        assert list(given.iterdir()) == []


async def test_an_interrupted_backup_leaves_no_part_behind(tmp_path: Path) -> None:
    """Cancelled as its second snapshot begins (a ``.part`` file open): the part and the
    folder the backup made are gone, and the connection goes on."""
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        settings = settings_for(server, service=True, artifacts_dir=str(tmp_path / "none"))
        await provision(admin)
        await admin.js.publish("cairn.ev.w1.run.r1", b"{}")
        said: list[str] = []

        def say(line: str) -> None:  # the first stream is taken: stop at the next await
            said.append(line)
            task.cancel()

        task = asyncio.create_task(backup(admin, folder, settings, say=say))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert said[0].startswith("METRICS:")
        assert not folder.exists()
        assert await stream_info(admin, EVENTS.name) is not None


async def test_a_restore_that_fails_part_way_is_finished_by_running_it_again_forced(
    tmp_path: Path,
) -> None:
    """A snapshot file that changes after the checks (here: EVENTS, restored last) is caught
    by the checksum of what was sent: the earlier streams are restored, EVENTS is not made;
    the same restore again, forced, completes."""
    folder = tmp_path / "backup"
    async with _server(tmp_path / "a") as (server, admin):
        await _small_backup(server, admin, folder)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    events = folder / "streams" / "EVENTS.tar.s2"
    good = events.read_bytes()
    events.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    async with _server(tmp_path / "b") as (server_b, admin_b):
        settings = settings_for(server_b, service=True)
        with pytest.raises(ChecksumMismatch, match=r"stream EVENTS: .* changed while"):
            await restore(admin_b, folder, settings, checked=manifest)
        assert await stream_info(admin_b, METRICS.name) is not None
        assert await stream_info(admin_b, EVENTS.name) is None
        events.write_bytes(good)
        with pytest.raises(StreamNotEmpty, match="stream METRICS"):
            await restore(admin_b, folder, settings)
        await restore(admin_b, folder, settings, force=True)
        info = await stream_info(admin_b, EVENTS.name)
        assert info is not None and info["state"]["last_seq"] == 20
