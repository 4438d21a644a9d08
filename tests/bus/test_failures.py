"""``cairn.bus.transient`` over what a real server answers: what may pass by itself (no
responders, a stream the server does not know, a timeout) against the server's refusals (a
missing consumer, a bad request, a wrong last sequence)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from cairn.bus import Connection, transient
from cairn.bus._failures import TRANSIENT_ERR_CODES, TRANSIENT_STATUS_CODES
from cairn.proto import subjects
from cairn.proto.streams import EVENTS


async def _refusal(call: Awaitable[Any]) -> APIError:
    with pytest.raises(APIError) as caught:
        await call
    return caught.value


async def test_a_stream_the_server_does_not_know_may_pass(admin_conn: Connection) -> None:
    """A recovering cluster answers this for a stream it does not know yet."""
    exc = await _refusal(admin_conn.js.consumer_info(f"NOSUCH{uuid.uuid4().hex}", "c"))
    assert exc.err_code == 10059 and exc.code == 404
    assert transient(exc)


async def test_no_responders_may_pass(admin_conn: Connection) -> None:
    """No server answers the API subject (JetStream starting, or away)."""
    nobody = admin_conn.nc.jetstream(prefix=f"$NOBODY{uuid.uuid4().hex}.API")
    exc = await _refusal(nobody.stream_info(EVENTS.name))
    assert exc.err_code is None and exc.code in TRANSIENT_STATUS_CODES
    assert transient(exc)


async def test_a_missing_consumer_and_a_bad_request_are_refusals(
    conn: Connection, admin_conn: Connection
) -> None:
    """(``conn``: the streams provisioned.)"""
    missing = await _refusal(admin_conn.js.consumer_info(EVENTS.name, f"c{uuid.uuid4().hex}"))
    assert missing.err_code == 10014 and not transient(missing)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE)  # no start seq
    bad = await _refusal(admin_conn.js.add_consumer(EVENTS.name, config))
    assert bad.code == 400 and bad.err_code is not None and not transient(bad)


async def test_a_wrong_last_sequence_is_a_refusal(
    conn: Connection, admin_conn: Connection, ws_name: str
) -> None:
    subject = subjects.logs(ws_name, "r")
    await admin_conn.js.publish(subject, b"x")
    stale = {"Nats-Expected-Last-Subject-Sequence": "0"}  # "no message on it yet"
    exc = await _refusal(admin_conn.js.publish(subject, b"x", headers=stale))
    assert exc.err_code == 10071 and not transient(exc)


def test_the_client_failures_and_the_codes() -> None:
    """What the client raises without an answer may pass; each code is explained."""
    assert transient(TimeoutError()) and transient(ConnectionError())
    assert transient(APIError(code=503, err_code=10008))
    assert not transient(APIError(code=503, err_code=10039))  # JetStream off for the account
    assert not transient(ValueError())
    assert all(TRANSIENT_ERR_CODES.values()) and all(TRANSIENT_STATUS_CODES.values())
