"""The actor of every event is the user the NATS server attests, never what a client says."""

from __future__ import annotations

import json
import uuid

import pytest

from cairn.bus import Connection, EventStore
from cairn.errors import PermissionDenied
from cairn.proto import subjects
from cairn.proto.assets import ComputeSpec, CreateCompute
from cairn.proto.commands import CreateExperiment
from cairn.rpc import SERVICE_ACTOR, Client, actor_of
from tests.conftest import add_people

FORGED = {
    "Cairn-Actor": "cairn-scheduler",
    "Nats-Request-Info": json.dumps({"acc": "CAIRN", "user": "olga"}),
}


def forging(conn: Connection, workspace: str) -> Client:
    """A client that claims, in both headers, to be someone it is not."""
    client = Client(conn, workspace)
    client.headers = dict(FORGED)
    return client


async def test_the_actor_is_the_connected_user_whatever_the_headers_say(
    client: Client, people: dict[str, Connection], store: EventStore, admin_conn: Connection
) -> None:
    await add_people(admin_conn, client.workspace, "dana")
    dana = forging(people["dana"], client.workspace)
    name = "forged-" + uuid.uuid4().hex[:8]
    done = await dana.send(CreateExperiment(command_id=uuid.uuid4().hex, name=name))
    recorded = await store.read(subjects.event(client.workspace, "experiment", done.aggregate_id))
    assert [r.envelope.actor for r in recorded] == ["dana"]


async def test_a_forged_header_does_not_make_a_data_scientist_a_compute_operator(
    client: Client, people: dict[str, Connection], admin_conn: Connection
) -> None:
    await add_people(admin_conn, client.workspace, "dana", "olga")
    spec = ComputeSpec(kind="cluster", min_nodes=0, max_nodes=1)
    for forged in (FORGED, {"Cairn-Actor": "olga"}, {"Nats-Request-Info": '{"user":"olga"}'}):
        dana = Client(people["dana"], client.workspace)
        dana.headers = dict(forged)
        with pytest.raises(PermissionDenied):
            await dana.send(CreateCompute(command_id=uuid.uuid4().hex, name="gpu", spec=spec))
    olga = forging(people["olga"], client.workspace)  # the operator herself, headers or not
    await olga.send(CreateCompute(command_id=uuid.uuid4().hex, name="gpu", spec=spec))


def test_only_the_people_account_names_a_user() -> None:
    """A header that did not come through the people's import (one a member of the services'
    account wrote) names no one; the services' account is one actor."""
    people = json.dumps({"acc": "USERS", "user": "dana"})
    assert actor_of({"Nats-Request-Info": people}) == "dana"
    token = json.dumps({"acc": "USERS", "user": "dana~0a1b2c3d4e5f"})  # an API token's user
    assert actor_of({"Nats-Request-Info": token}) == "dana"
    assert actor_of({"Nats-Request-Info": json.dumps({"acc": "CAIRN", "user": "x"})}) == (
        SERVICE_ACTOR
    )
    for headers in (None, {}, {"Cairn-Actor": "olga"}, {"Nats-Request-Info": "not json"}):
        assert actor_of(headers) == SERVICE_ACTOR
