"""Stream provisioning is idempotent, repairs drift, and EVENTS is immutable on the server."""

from __future__ import annotations

import json

import msgspec
import pytest

from cairn.bus import Connection, EventStore, ensure_stream, provision
from cairn.proto.streams import EVENTS, JOBS, KV_BUCKETS
from tests.helpers import envelope


async def test_provisioning_twice_changes_nothing(conn: Connection) -> None:
    again = await provision(conn)
    assert again["EVENTS"] == again["METRICS"] == again["LOGS"] == again["JOBS"] == "unchanged"
    assert {again[b.bucket] for b in KV_BUCKETS} == {"unchanged"}


async def test_drift_is_repaired_by_the_admin(admin_conn: Connection) -> None:
    conn = admin_conn  # reconfiguring a stream is the admin's alone
    drifted = msgspec.structs.replace(JOBS, duplicate_window=60 * 1_000_000_000)
    assert await ensure_stream(conn, drifted) == "updated"
    assert await ensure_stream(conn, JOBS) == "updated"
    assert await ensure_stream(conn, JOBS) == "unchanged"


async def test_events_stream_refuses_deletes_and_purges(
    conn: Connection, admin_conn: Connection, store: EventStore, ws_name: str
) -> None:
    """Even the admin, who alone may send these, cannot delete or purge EVENTS."""
    info = json.loads((await conn.nc.request("$JS.API.STREAM.INFO.EVENTS", b"", timeout=5)).data)
    config = info["config"]
    for key in ("deny_delete", "deny_purge", "allow_direct", "allow_atomic"):
        assert config[key] is True, key
    assert config.get("allow_rollup_hdrs", False) is False
    limits = (config["discard"], config["max_bytes"], config["max_msgs"], config["max_age"])
    assert limits == ("new", -1, -1, 0)
    assert config["duplicate_window"] == 600 * 10**9
    assert config["max_msg_size"] == EVENTS.max_msg_size
    result = await store.append(
        f"cairn.ev.{ws_name}.experiment.d", [envelope(ws_name, "d")], expected_seq=0, msg_id="d"
    )
    for api, body in [
        ("$JS.API.STREAM.MSG.DELETE.EVENTS", {"seq": result.seq}),
        ("$JS.API.STREAM.PURGE.EVENTS", {}),
    ]:
        payload = json.dumps(body).encode()
        reply = json.loads((await admin_conn.nc.request(api, payload, timeout=5)).data)
        assert "error" in reply, api
    assert len(await store.read(f"cairn.ev.{ws_name}.experiment.d")) == 1


async def test_rollup_headers_cannot_erase_history(
    conn: Connection, store: EventStore, ws_name: str
) -> None:
    subject = f"cairn.ev.{ws_name}.experiment.r"
    await store.append(subject, [envelope(ws_name, "r")], expected_seq=0, msg_id="r1")
    reply = await conn.nc.request(subject, b"{}", headers={"Nats-Rollup": "sub"}, timeout=5)
    assert "error" in json.loads(reply.data)
    assert len(await store.read(subject)) == 1


@pytest.mark.parametrize("bucket", ["cairn_agents"])
async def test_kv_bucket_exists_with_a_ttl(conn: Connection, bucket: str) -> None:
    kv = await conn.js.key_value(bucket)
    status = await kv.status()
    assert status.ttl == 30
