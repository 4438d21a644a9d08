"""Workspace secrets against the real server and registry: round trips, recorded reads that
never hold a value, typed refusals, roles, reads from runs and jobs, and key rotation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.fernet import Fernet, InvalidToken

from cairn.bus import Connection, EventStore
from cairn.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
)
from cairn.proto import subjects
from cairn.proto.assets import DatastoreSpec, GetAsset, RegisterDatastore
from cairn.proto.commands import CompleteRun, CreateWorkspace, QueryResult
from cairn.proto.events import (
    AssetRegistered,
    DatastoreCredentialsResealed,
    SecretDeleted,
    SecretRead,
    SecretResealed,
    SecretSet,
    WorkspaceKeyRotated,
)
from cairn.proto.secrets import (
    MAX_SECRET_BYTES,
    ListSecrets,
    ReadSecret,
    RotateWorkspaceKey,
    SetSecret,
)
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.secrets import (
    add_key,
    key_id_of,
    keyring,
    rotation_key_id,
    seal_text,
    unseal,
    unseal_text,
)
from cairn.settings import Settings
from tests.conftest import MATRIX_WS, Agents, add_people
from tests.services.test_jobs import source


def cid() -> str:
    return uuid.uuid4().hex


async def everything(conn: Connection) -> bytes:
    """Every message of EVENTS, raw (subjects, headers and bodies)."""
    store = EventStore(conn)
    out = b""
    for seq in range(1, await store.last_seq() + 1):
        msg = await conn.nc.request("$JS.API.DIRECT.GET.EVENTS", json.dumps({"seq": seq}).encode())
        out += msg.subject.encode() + json.dumps(dict(msg.headers or {})).encode() + msg.data
    return out


async def events(store: EventStore, ws: str, kind: str, aggregate_id: str) -> list[object]:
    return [r.envelope.data for r in await store.read(subjects.event(ws, kind, aggregate_id))]


async def test_set_get_list_delete_round_trip(ws: AsyncWorkspace) -> None:
    await ws.secrets.set("db-pass", "first value")
    await ws.secrets.set("db-pass", "second value")
    await ws.secrets.set_many({"api-key": "k-123", "token": "t-456"})
    got = await ws.secrets.read("db-pass")
    assert got == {"name": "db-pass", "version": 2, "value": "second value"}
    assert await ws.secrets.get_many(["api-key", "token"]) == {"api-key": "k-123", "token": "t-456"}
    listed = await ws.secrets.list()
    assert [(s["name"], s["version"]) for s in listed] == [
        ("api-key", 1),
        ("db-pass", 2),
        ("token", 1),
    ]
    row = next(s for s in listed if s["name"] == "db-pass")
    assert row["reads"] == 1 and row["updated_by"] and "value" not in row
    await ws.secrets.delete("token")
    assert [s["name"] for s in await ws.secrets.list()] == ["api-key", "db-pass"]
    with pytest.raises(NotFound):
        await ws.secrets.get("token")
    with pytest.raises(NotFound):
        await ws.secrets.delete("token")
    await ws.secrets.set("token", "again")
    assert (await ws.secrets.read("token"))["version"] == 2  # versions go on counting


async def test_reads_are_recorded_and_no_value_reaches_the_log_a_reply_or_a_line(
    ws: AsyncWorkspace,
    store: EventStore,
    conn: Connection,
    service_settings: Settings,
    capfd: pytest.CaptureFixture[str],
) -> None:
    plain = "pl41n-" + uuid.uuid4().hex
    await ws.secrets.set("db-pass", plain)
    assert await ws.secrets.get("db-pass") == plain
    listed = await ws.secrets.list()
    recorded = await events(store, ws.name, "secret", "db-pass")
    assert [type(e).__name__ for e in recorded] == ["SecretSet", "SecretRead"]
    written, read = recorded
    assert isinstance(written, SecretSet) and isinstance(read, SecretRead)
    assert read.version == 1 and read.run_id is None and read.reader == ws.settings.nats_user
    assert unseal_text(service_settings, ws.name, written.sealed) == plain
    for hay in (await everything(conn), json.dumps(listed).encode(), "".join(capfd.readouterr())):
        text = hay if isinstance(hay, str) else hay.decode(errors="replace")
        assert plain not in text, "a secret's value left the registry in clear"
    assert written.sealed not in json.dumps(listed)


async def test_bad_names_and_values_are_typed_errors(ws: AsyncWorkspace, client: Client) -> None:
    for name in ("", "a" * 128, "has space", "under_score", "dot.ted", "ünï", "x\x00"):
        with pytest.raises(InvalidInput):
            await ws.secrets.set(name, "v")
        with pytest.raises(InvalidInput):  # the registry refuses what the SDK would not send
            await client.send(_raw(name))
    await ws.secrets.set("a" * 127, "longest name")
    big = "x" * (MAX_SECRET_BYTES + 1)
    with pytest.raises(PayloadTooLarge):
        await ws.secrets.set("big", big)
    with pytest.raises(InvalidInput):  # 25 KiB of characters, more than 25 KiB of UTF-8
        await ws.secrets.set("big", "é" * MAX_SECRET_BYTES)
    await ws.secrets.set("big", "x" * MAX_SECRET_BYTES)
    with pytest.raises(NotFound):
        await ws.secrets.get("never-set")


def _raw(name: str) -> SetSecret:
    """A SetSecret with any name, as a client that skips the checks would send it."""
    good = SetSecret(command_id=cid(), name="placeholder", value="v")
    return msgspec.structs.replace(good, name=name)


async def test_roles_decide_who_sets_reads_and_lists(
    client: Client, people: dict[str, Connection], admin_conn: Connection
) -> None:
    # the matrix's people, members of MATRIX_WS only: a compute operator and an auditor
    with contextlib.suppress(AlreadyExists):  # the role matrix's test may have made it
        await Client(client.conn, MATRIX_WS).send(CreateWorkspace(command_id=cid(), name=MATRIX_WS))
    await add_people(admin_conn, MATRIX_WS, "mx-ds", "mx-co", "mx-aud")
    name = "mx-" + uuid.uuid4().hex[:8]
    ds = Client(people["mx-ds"], MATRIX_WS, attempts=1, timeout=3)
    co = Client(people["mx-co"], MATRIX_WS, attempts=1, timeout=3)
    aud = Client(people["mx-aud"], MATRIX_WS, attempts=1, timeout=3)
    done = await ds.send(SetSecret(command_id=cid(), name=name, value="v1"))
    for who in (co, aud):
        with pytest.raises(PermissionDenied):
            await who.send(SetSecret(command_id=cid(), name=name, value="mine"))
        with pytest.raises(PermissionDenied):
            await who.send_any(ReadSecret(command_id=cid(), name=name))
    with pytest.raises(PermissionDenied):  # the server lets the query through; the registry not
        await co.ask(ListSecrets())
    names = [s["name"] for s in (await aud.ask(ListSecrets(min_seq=done.seq))).data]
    assert name in names  # auditors see names, never values
    reply = await ds.send_any(ReadSecret(command_id=cid(), name=name))
    assert isinstance(reply, QueryResult) and reply.data["value"] == "v1"
    other = Client(people["mx-ds"], client.workspace, attempts=1, timeout=3)
    with pytest.raises(PermissionDenied):  # not a workspace of theirs
        await other.send(SetSecret(command_id=cid(), name=name, value="v"))


async def test_a_run_reads_as_itself_and_an_ended_run_reads_nothing(
    ws: AsyncWorkspace, store: EventStore
) -> None:
    await ws.secrets.set("db-pass", "from-a-run")
    exp = await ws.experiment("secrets")
    run = await exp.start_run()
    assert await run.get_secret("db-pass") == "from-a-run"
    assert await run.get_secrets(["db-pass"]) == {"db-pass": "from-a-run"}
    reads = [
        e for e in await events(store, ws.name, "secret", "db-pass") if isinstance(e, SecretRead)
    ]
    assert [r.run_id for r in reads] == [run.id, run.id]
    with pytest.raises(NotFound):
        await ws.secrets.get("db-pass", run_id="no-such-run")
    await ws.client.send(CompleteRun(command_id=cid(), run_id=run.id))
    with pytest.raises(PermissionDenied):
        await run.get_secret("db-pass")


async def test_a_job_reads_a_secret_as_its_run(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    """A job reads the secrets its spec grants, recorded as its run; an existing secret it
    was not granted is refused by its agent and never read."""
    await ws.secrets.set("db-pass", "job-secret-42")
    await ws.secrets.set("other", "not-for-this-job")
    src = source(
        tmp_path,
        """
        import hashlib
        from cairn.sdk import Run
        run = Run.get_context()
        value = run.get_secret("db-pass")
        print("digest", hashlib.sha256(value.encode()).hexdigest(), flush=True)
        try:
            run.get_secret("other")
        except Exception as exc:
            print("refused", type(exc).__name__, flush=True)
        run.log("read", 1)
    """,
    )
    await agents.start()
    config = ScriptRunConfig(source_directory=src, script="job.py", secrets=["db-pass"])
    run_id = await submit(ws, "jobs", config)
    printed: list[str] = []
    details = await follow(ws, run_id, out=printed.append, timeout=60)
    output = "".join(printed)
    assert details["status"] == "Completed", output
    assert f"digest {hashlib.sha256(b'job-secret-42').hexdigest()}" in output
    assert "refused PermissionDenied" in output and "job-secret-42" not in output
    other = await events(store, ws.name, "secret", "other")
    assert not [e for e in other if isinstance(e, SecretRead)]
    reads = [
        e for e in await events(store, ws.name, "secret", "db-pass") if isinstance(e, SecretRead)
    ]
    assert [(r.run_id, r.reader) for r in reads] == [(run_id, "cairn")]
    assert (await ws.run(run_id).get_metrics("read"))["read"] == 1


async def test_rotation_reseals_secrets_and_credentials_and_drops_the_old_key(
    ws: AsyncWorkspace, store: EventStore, service_settings: Settings
) -> None:
    # a workspace whose key is the single-key file of before keyrings
    keys = service_settings.home_path / "keys"
    keys.mkdir(exist_ok=True)
    old_key = Fernet.generate_key()
    (keys / f"{ws.name}.key").write_bytes(old_key)
    await ws.secrets.set("db-pass", "before-rotation")
    await ws.secrets.set("gone", "deleted-before-rotation")
    await ws.secrets.delete("gone")
    creds = {"access_key_id": "AKIA-ROT", "secret_access_key": "rot-secret"}
    spec = DatastoreSpec(kind="s3", endpoint_url="http://127.0.0.1:1", bucket="b")
    await ws.client.send(
        RegisterDatastore(command_id=cid(), name="lake", spec=spec, credentials=creds)
    )
    before = await events(store, ws.name, "secret", "db-pass")
    assert isinstance(before[0], SecretSet) and before[0].key_id == "legacy"

    done = await ws.secrets.rotate_key()
    rotated = await events(store, ws.name, "keyring", ws.name)
    assert len(rotated) == 1 and isinstance(rotated[0], WorkspaceKeyRotated)
    new_id = rotated[0].key_id
    assert rotated[0].previous == ["legacy"] and rotated[0].dropped == ["legacy"]
    assert (rotated[0].resealed_secrets, rotated[0].resealed_datastores) == (1, 1)
    ring = keyring(service_settings, ws.name, create=False)
    assert ring.current == new_id and set(ring.keys) == {new_id}
    assert not (keys / f"{ws.name}.key").exists()

    resealed = [
        e
        for e in await events(store, ws.name, "secret", "db-pass")
        if isinstance(e, SecretResealed)
    ]
    assert len(resealed) == 1 and resealed[0].key_id == new_id
    stored = await events(store, ws.name, "datastore", "lake")
    moved = [e for e in stored if isinstance(e, DatastoreCredentialsResealed)]
    assert len(moved) == 1 and moved[0].key_id == new_id
    for token in (resealed[0].sealed, moved[0].sealed_credentials):
        with pytest.raises(InvalidToken):  # the old key alone opens none of them
            Fernet(old_key).decrypt(token.partition(":")[2].encode())
    assert await ws.secrets.get("db-pass") == "before-rotation"
    sealed = (
        await ws.client.ask(
            GetAsset(asset_kind="datastore", name="lake", sealed=True, min_seq=done.seq)
        )
    ).data["sealed_credentials"]
    assert sealed == moved[0].sealed_credentials
    assert unseal(service_settings, ws.name, sealed) == creds
    first = next(e for e in stored if isinstance(e, AssetRegistered))
    assert isinstance(first.spec, DatastoreSpec) and first.spec.sealed_credentials
    with pytest.raises(Exception, match="sealed under workspace key legacy"):
        unseal(service_settings, ws.name, first.spec.sealed_credentials)
    assert any(isinstance(e, SecretDeleted) for e in await events(store, ws.name, "secret", "gone"))

    # a retried command rotates nothing more; a second rotation moves on from the new key
    again = await ws.client.send(RotateWorkspaceKey(command_id=done.command_id))
    assert again.replayed and len(await events(store, ws.name, "keyring", ws.name)) == 1
    await ws.secrets.rotate_key(keep_old_keys=True)
    ring = keyring(service_settings, ws.name, create=False)
    assert ring.current != new_id and set(ring.keys) == {new_id, ring.current}
    assert await ws.secrets.get("db-pass") == "before-rotation"


async def test_a_rotation_run_again_elsewhere_adds_no_second_key(
    ws: AsyncWorkspace, store: EventStore, service_settings: Settings
) -> None:
    """Another replica of the registry got the same rotation command first (a resend) and
    added its key, then this one runs it: the key it adds is that one, left as it was, and
    nothing the first copy sealed under it becomes unopenable when the others are dropped."""
    await ws.secrets.set("db-pass", "kept")
    command_id = cid()
    key_id, _ = add_key(service_settings, ws.name, rotation_key_id(ws.name, command_id))
    material = keyring(service_settings, ws.name).keys[key_id]
    sealed_elsewhere = seal_text(service_settings, ws.name, "sealed by the first copy")
    assert key_id_of(sealed_elsewhere) == key_id

    done = await ws.client.send(RotateWorkspaceKey(command_id=command_id))
    assert not done.replayed
    rotated = await events(store, ws.name, "keyring", ws.name)
    assert len(rotated) == 1 and isinstance(rotated[0], WorkspaceKeyRotated)
    assert rotated[0].key_id == key_id
    ring = keyring(service_settings, ws.name, create=False)
    assert ring.current == key_id and ring.keys == {key_id: material}
    assert unseal_text(service_settings, ws.name, sealed_elsewhere) == "sealed by the first copy"
    assert await ws.secrets.get("db-pass") == "kept"
    assert add_key(service_settings, ws.name, key_id) == (key_id, [])  # again: nothing added
    assert keyring(service_settings, ws.name).keys == {key_id: material}

    # a rotation that failed after adding its key, then another that kept the old keys: the
    # first one sent again makes its key current again and completes
    stuck = cid()
    stuck_key, _ = add_key(service_settings, ws.name, rotation_key_id(ws.name, stuck))
    later = await ws.secrets.rotate_key(keep_old_keys=True)
    assert keyring(service_settings, ws.name).current not in (stuck_key, key_id)
    done = await ws.client.send(RotateWorkspaceKey(command_id=stuck))
    assert not done.replayed and done.seq > later.seq
    assert set(keyring(service_settings, ws.name).keys) == {stuck_key}
    assert await ws.secrets.get("db-pass") == "kept"


async def test_a_read_that_cannot_be_recorded_returns_no_value(
    ws: AsyncWorkspace, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ws.secrets.set("db-pass", "unrecorded-read")
    append = EventStore.append

    async def refuse_reads(self: EventStore, subject: str, envelopes: Any, **kw: Any) -> Any:
        if any(isinstance(e.data, SecretRead) for e in envelopes):
            raise Unavailable("the log is away")
        return await append(self, subject, envelopes, **kw)

    monkeypatch.setattr(EventStore, "append", refuse_reads)
    with pytest.raises(Unavailable):
        await ws.secrets.get("db-pass")
    monkeypatch.undo()
    recorded = await events(store, ws.name, "secret", "db-pass")
    assert not any(isinstance(e, SecretRead) for e in recorded)
    assert await ws.secrets.get("db-pass") == "unrecorded-read"
