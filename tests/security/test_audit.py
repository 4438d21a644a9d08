"""Tamper evidence, against real servers: the audit service signs checkpoints of each
workspace's hash chain into the log, an untouched log verifies, and on copies of the server's
file store each kind of tampering is found and named by ``cairn audit verify``'s check.

How a copy is tampered with (docs/security.md, *Tamper evidence*): the server is stopped,
its JetStream store copied, a nats-server started on the copy, and the copy's EVENTS rewritten
as someone who can write the store can do (a block's checksum is keyed by the stream's name,
so they can write valid blocks; here a nats-server writes them): the stream deleted and
created again, and every message published again in order with its ``Nats-Msg-Id``, one
changed, left out, added, or two swapped. A raw byte edit that leaves a block's checksum
wrong is tried too: the server drops the record, which shows as a deleted event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.errors import NotFoundError

from cairn.audit import (
    RawEvent,
    heads_path,
    load_or_create_signing_key,
    public_key_hex,
    read_anchor,
    read_raw,
    verify_log,
)
from cairn.bus import Connection, EventStore, connect, ensure_stream
from cairn.embedded import NatsServer
from cairn.embedded._auth import ADMIN_USER
from cairn.proto import subjects
from cairn.proto.streams import EVENTS
from cairn.services.audit import AuditService
from cairn.settings import Settings
from tests.conftest import own_server, settings_for
from tests.helpers import envelope
from tests.test_cli import CAIRN

WORKSPACES = ("wa", "wb")
PER_WORKSPACE = 9  # events of each workspace; windows of 4: two checkpoints, one left over


async def _append_events(conn: Connection) -> None:
    store = EventStore(conn)
    for i in range(PER_WORKSPACE):
        for ws in WORKSPACES:
            subject = subjects.event(ws, "experiment", f"e{i}")
            await store.append(
                subject, [envelope(ws, f"e{i}")], expected_seq=0, msg_id=uuid.uuid4().hex
            )


async def _wait_signed(conn: Connection, settings: Settings, every: int) -> None:
    """Until each workspace has its full windows signed (the rest waits for the timer)."""
    public = load_or_create_signing_key(settings).public_key()
    want = PER_WORKSPACE // every * every
    for _ in range(200):
        rows = await verify_log(conn, public)
        if all(r["events"] - r["uncovered"] >= want for r in rows) and len(rows) == 2:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not signed in time: {rows}")


class Original:
    def __init__(self, home: Path, settings: Settings) -> None:
        self.home, self.settings = home, settings
        self.public = load_or_create_signing_key(settings).public_key()


@pytest.fixture(scope="module")
async def original(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Original]:
    """A server whose log the audit service has signed (two checkpoints per workspace, one
    event each left uncovered), then stopped: its store is what the tests copy. Workspace wa's
    events are at odd sequences 1-17, wb's at even ones 2-18, the checkpoints at 19-22."""
    home = tmp_path_factory.mktemp("audit-home")
    server, settings, conn = await own_server(home, request_timeout=5.0)
    settings = msgspec.structs.replace(
        settings, audit_every_events=4, audit_every_s=3600.0, state_dir=str(home / "state")
    )
    try:
        await _append_events(conn)  # first: the checkpoints follow every event (seqs 19-22)
        audit = AuditService(conn, settings, poll_s=0.02)
        await audit.start()
        stop = asyncio.Event()
        task = asyncio.create_task(audit.run(stop))
        await _wait_signed(conn, settings, 4)
        stop.set()
        await task
        # a restart signs nothing again: the same checkpoints, read back
        again = AuditService(conn, settings, poll_s=0.02)
        await again.start()
        assert {ws: c.index for ws, c in again.chains.items()} == {"wa": 2, "wb": 2}
        # and reads EVENTS from the first event not yet signed (wa's e8 at 17), not from 1
        assert again.position == 16
    finally:
        await conn.close()
        server.stop()
    yield Original(home, settings)


@contextlib.asynccontextmanager
async def _copy(
    original: Original, tmp: Path, edit: Callable[[list[RawEvent]], list[RawEvent]] | None
) -> AsyncIterator[NatsServer]:
    """A server on a copy of the original's store, its EVENTS rewritten with ``edit`` (None:
    untouched) and the server restarted on what it wrote."""
    home = tmp / "copy"
    (home / "nats").mkdir(parents=True)
    shutil.copytree(original.home / "nats" / "store", home / "nats" / "store")
    server = NatsServer(home, port=0)
    await server.start()
    try:
        if edit is not None:
            admin = await connect(_admin(server))
            try:
                await _rewrite(admin, edit)
            finally:
                await admin.close()
            server.stop()
            await server.start()  # what it holds after a restart, from its files
        yield server
    finally:
        server.stop()


async def _on_copy(
    original: Original, tmp: Path, edit: Callable[[list[RawEvent]], list[RawEvent]] | None
) -> list[dict[str, Any]]:
    """Verify a tampered copy with the original's public key and anchor."""
    async with _copy(original, tmp, edit) as server:
        conn = await connect(settings_for(server, service=True, request_timeout=5.0))
        try:
            anchor = read_anchor(heads_path(original.settings))
            return await verify_log(conn, original.public, anchor=anchor)
        finally:
            await conn.close()


def _admin(server: NatsServer) -> Settings:
    return msgspec.structs.replace(
        settings_for(server, service=True, request_timeout=5.0),
        nats_user=ADMIN_USER,
        nats_password=server.admin_password,
    )


async def _rewrite(admin: Connection, edit: Callable[[list[RawEvent]], list[RawEvent]]) -> None:
    messages = [m async for m in read_raw(admin, ">")]
    await admin.js.delete_stream(EVENTS.name)
    await ensure_stream(admin, EVENTS)
    for m in edit(messages):
        headers = {"Nats-Msg-Id": m.msg_id} if m.msg_id else None
        await admin.js.publish(m.subject, m.data, headers=headers)


def _verdicts(rows: list[dict[str, Any]]) -> dict[str, tuple[str, int | None, str | None]]:
    return {r["workspace"]: (r["verdict"], r["seq"], r["subject"]) for r in rows}


def _index_of(messages: list[RawEvent], subject: str) -> int:
    return next(i for i, m in enumerate(messages) if m.subject == subject)


async def test_an_untouched_store_verifies_and_says_what_is_not_yet_covered(
    original: Original, tmp_path: Path
) -> None:
    rows = await _on_copy(original, tmp_path, None)
    assert [(r["workspace"], r["verdict"], r["checkpoints"], r["uncovered"]) for r in rows] == [
        ("wa", "ok", 2, 1),
        ("wb", "ok", 2, 1),
    ]
    assert all(r["events"] == PER_WORKSPACE for r in rows)


async def test_a_changed_payload_is_named(original: Original, tmp_path: Path) -> None:
    target = "cairn.ev.wa.experiment.e2"

    def edit(messages: list[RawEvent]) -> list[RawEvent]:
        i = _index_of(messages, target)
        m = messages[i]
        messages[i] = m._replace(data=m.data.replace(b'"name":"e2"', b'"name":"e7"'))
        assert messages[i].data != m.data
        return messages

    found = _verdicts(await _on_copy(original, tmp_path, edit))
    assert found["wa"] == ("modified", 5, target)  # wa's e2 is the 5th message
    assert found["wb"][0] == "ok"


async def test_a_dropped_message_is_named(original: Original, tmp_path: Path) -> None:
    target = "cairn.ev.wb.experiment.e1"
    found = _verdicts(
        await _on_copy(original, tmp_path, lambda ms: [m for m in ms if m.subject != target])
    )
    assert found["wb"] == ("deleted", 4, target)
    # every later message moved one sequence down: wa's chain sees that too
    assert found["wa"][0] in ("reordered", "deleted")


async def test_an_inserted_message_is_named(original: Original, tmp_path: Path) -> None:
    forged = envelope("wa", "forged")
    from cairn.proto.events import encode_envelope

    def edit(messages: list[RawEvent]) -> list[RawEvent]:
        i = _index_of(messages, "cairn.ev.wa.experiment.e1")
        extra = RawEvent(0, "cairn.ev.wa.experiment.forged", "x:0", encode_envelope(forged))
        return [*messages[:i], extra, *messages[i:]]

    found = _verdicts(await _on_copy(original, tmp_path, edit))
    assert found["wa"] == ("inserted", 3, "cairn.ev.wa.experiment.forged")


async def test_two_swapped_messages_are_named(original: Original, tmp_path: Path) -> None:
    def edit(messages: list[RawEvent]) -> list[RawEvent]:
        i = _index_of(messages, "cairn.ev.wb.experiment.e2")
        j = _index_of(messages, "cairn.ev.wb.experiment.e3")
        messages[i], messages[j] = messages[j], messages[i]
        return messages

    found = _verdicts(await _on_copy(original, tmp_path, edit))
    assert found["wb"] == ("reordered", 6, "cairn.ev.wb.experiment.e3")
    assert found["wa"][0] == "ok"


async def test_a_truncated_tail_is_named_against_the_anchor(
    original: Original, tmp_path: Path
) -> None:
    def edit(messages: list[RawEvent]) -> list[RawEvent]:
        return messages[:10]  # the checkpoints, all after the 10th message, are gone

    found = _verdicts(await _on_copy(original, tmp_path, edit))
    assert found["wa"][0] == "truncated"
    assert found["wb"][0] == "truncated"


async def test_a_raw_byte_edit_of_a_block_is_found(original: Original, tmp_path: Path) -> None:
    """An edit that leaves the block's checksum wrong: the server passes the record over."""
    home = tmp_path / "raw"
    (home / "nats").mkdir(parents=True)
    shutil.copytree(original.home / "nats" / "store", home / "nats" / "store")
    blocks = sorted((home / "nats" / "store").rglob("EVENTS/msgs/*.blk"))
    assert blocks
    data = bytearray(blocks[0].read_bytes())
    at = data.index(b'"name":"e4"')
    data[at + 9] = ord("9")
    blocks[0].write_bytes(bytes(data))
    server = NatsServer(home, port=0)
    await server.start()
    try:
        conn = await connect(settings_for(server, service=True, request_timeout=5.0))
        try:
            rows = await verify_log(conn, original.public)
            # the record reads as absent, while the stream's state still counts it
            with pytest.raises(NotFoundError):
                await conn.js.get_msg(EVENTS.name, 9)
            assert (await conn.js.stream_info(EVENTS.name)).state.messages == 22
        finally:
            await conn.close()
    finally:
        server.stop()
    found = _verdicts(rows)
    assert found["wa"] == ("deleted", 9, "cairn.ev.wa.experiment.e4")
    assert found["wb"][0] == "ok"


async def _cli(env: dict[str, str], *args: str) -> tuple[int | None, str, str]:
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(*CAIRN, *args, env=env, stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_prints_the_key_and_exits_1_on_a_finding(
    original: Original, tmp_path: Path
) -> None:
    env = {**os.environ, "CAIRN_HOME": str(original.home), "CAIRN_LOG_FORMAT": "json"}
    code, out, _ = await _cli(env, "audit", "key", "--json")
    key = json.loads(out)
    assert code == 0 and key["public_key"] == public_key_hex(original.public)

    def swap(messages: list[RawEvent]) -> list[RawEvent]:
        messages[0], messages[2] = messages[2], messages[0]  # wa's e0 and e1
        return messages

    for edit, status in ((None, 0), (swap, 1)):
        async with _copy(original, tmp_path / str(status), edit) as server:
            creds = tmp_path / f"service-{status}.json"
            assert server.credentials is not None
            creds.write_text(
                json.dumps(
                    {"user": "cairn-service", "password": server.credentials.service_password}
                )
            )
            run_env = {**env, "CAIRN_NATS_URL": server.url}
            args = ["audit", "verify", "--creds", str(creds), "--public-key", key["public_key"]]
            code, out, err = await _cli(run_env, *args)
            assert code == status, err
            if status:
                assert "wa: reordered at seq 1 cairn.ev.wa.experiment.e1" in err
            else:
                assert "wa" in out and "ok" in out and err == ""


async def test_the_admin_can_rewrite_the_stream_but_not_delete_or_purge_an_event(
    original: Original, tmp_path: Path
) -> None:
    """What the tests above do through the admin is the only way through the API: EVENTS
    denies deleting and purging messages, and no update can lift that."""
    async with _copy(original, tmp_path, None) as server:
        admin = await connect(_admin(server))
        try:
            info = json.loads((await admin.nc.request("$JS.API.STREAM.INFO.EVENTS", b"")).data)
            answers = []
            for key in ("deny_delete", "deny_purge"):
                config = {**info["config"], key: False}
                reply = await admin.nc.request(
                    "$JS.API.STREAM.UPDATE.EVENTS", json.dumps(config).encode()
                )
                answers.append(json.loads(reply.data)["error"]["err_code"])
            for subject, body in (
                ("$JS.API.STREAM.MSG.DELETE.EVENTS", {"seq": 1}),
                ("$JS.API.STREAM.PURGE.EVENTS", {"filter": "cairn.ev.wa.>"}),
            ):
                reply = await admin.nc.request(subject, json.dumps(body).encode())
                answers.append(json.loads(reply.data)["error"]["err_code"])
        finally:
            await admin.close()
    assert answers == [10052, 10052, 10057, 10110]


async def test_two_replicas_and_a_restart_record_each_window_once(tmp_path: Path) -> None:
    """Two audit services cut windows by time at different moments: the subject CAS makes
    one checkpoint win each time and the other go on from it; a third started later signs
    nothing twice."""
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(
        settings, audit_every_events=3, audit_every_s=0.05, state_dir=str(tmp_path / "state")
    )
    stop = asyncio.Event()
    try:
        replicas = [AuditService(conn, settings, poll_s=p) for p in (0.01, 0.03)]
        tasks = []
        for replica in replicas:
            await replica.start()
            tasks.append(asyncio.create_task(replica.run(stop)))
        store = EventStore(conn)
        for i in range(20):
            subject = subjects.event("wr", "experiment", f"e{i}")
            await store.append(
                subject, [envelope("wr", f"e{i}")], expected_seq=0, msg_id=uuid.uuid4().hex
            )
            await asyncio.sleep(0.02 * (i % 3))
        public = replicas[0].key.public_key()
        for _ in range(200):
            rows = await verify_log(conn, public)
            if rows and rows[0]["uncovered"] == 0:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        assert [(r["verdict"], r["events"], r["uncovered"]) for r in rows] == [("ok", 20, 0)]
        stored = [m async for m in read_raw(conn, subjects.audit_chain("wr"))]
        assert len(stored) == rows[0]["checkpoints"] >= 7  # at most 3 events per window
        late = AuditService(conn, settings)
        await late.start()
        assert late.chains["wr"].index == len(stored)
        assert late.position > 0  # it goes on from the low-water mark the replicas saved
        stale = msgspec.structs.replace(settings, state_dir=str(tmp_path / "elsewhere"))
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "audit-position.json").write_text(
            json.dumps({"read_from": 15, "heads": {"wr": [len(stored) + 1, "0" * 64]}})
        )
        doubting = AuditService(conn, stale)
        await doubting.start()
        assert doubting.position == 0  # the log lacks the checkpoint the hint was saved with
        again = asyncio.Event()
        task = asyncio.create_task(late.run(again))
        await asyncio.sleep(0.3)
        again.set()
        await task
        assert len([m async for m in read_raw(conn, subjects.audit_chain("wr"))]) == len(stored)
    finally:
        stop.set()
        await conn.close()
        server.stop()


async def test_the_cli_asks_the_running_service_for_the_key_when_the_home_has_none(
    original: Original, tmp_path: Path
) -> None:
    async with _copy(original, tmp_path, None) as server:
        conn = await connect(settings_for(server, service=True, request_timeout=5.0))
        settings = msgspec.structs.replace(original.settings, state_dir=str(tmp_path / "st"))
        service = AuditService(conn, settings)
        stop = asyncio.Event()
        try:
            await service.start()
            task = asyncio.create_task(service.run(stop))
            assert server.credentials is not None
            env = {
                **os.environ,
                "CAIRN_HOME": str(tmp_path / "elsewhere"),
                "CAIRN_NATS_URL": server.url,
                "CAIRN_NATS_USER": server.credentials.client_user,
                "CAIRN_NATS_PASSWORD": server.credentials.client_password,
                "CAIRN_LOG_FORMAT": "json",
            }
            code, out, err = await _cli(env, "audit", "key", "--json")
        finally:
            stop.set()
            await task
            await conn.close()
    assert code == 0, err
    answer = json.loads(out)
    assert answer["public_key"] == public_key_hex(original.public)
    assert answer["source"] == "the audit service"


async def test_a_removed_or_forged_checkpoint_is_named(original: Original, tmp_path: Path) -> None:
    chain_wa = subjects.audit_chain("wa")

    def drop_first(messages: list[RawEvent]) -> list[RawEvent]:
        i = _index_of(messages, chain_wa)
        return [*messages[:i], *messages[i + 1 :]]

    found = _verdicts(await _on_copy(original, tmp_path / "dropped", drop_first))
    assert found["wa"][0] == "checkpoint" and found["wb"][0] == "ok"

    def forge(messages: list[RawEvent]) -> list[RawEvent]:
        """wa's first checkpoint signed again, over the same window, by another key."""
        from cairn.audit import WorkspaceChain, event_digest, split_subject
        from cairn.proto.events import decode_envelope, encode_envelope

        i = _index_of(messages, chain_wa)
        old = decode_envelope(messages[i].data)
        chain = WorkspaceChain("wa")
        for m in messages[:i]:
            named = split_subject(m.subject)
            if named is not None and named[0] == "wa":
                chain.add(m.seq, named[1], event_digest(m.subject, m.msg_id, m.data), 0.0)
        cp = chain.cut(Ed25519PrivateKey.generate(), every_events=4)
        forged = encode_envelope(msgspec.structs.replace(old, data=cp))
        messages[i] = messages[i]._replace(data=forged)
        return messages

    found = _verdicts(await _on_copy(original, tmp_path / "forged", forge))
    assert found["wa"] == ("checkpoint", 19, chain_wa)
