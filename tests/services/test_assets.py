"""Environments, datastores and compute targets in the registry: roles, secrets, reserved names."""

from __future__ import annotations

import json
import uuid

import pytest

from cairn.bus import Connection, EventStore
from cairn.domain.environment import CURATED
from cairn.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from cairn.proto import subjects
from cairn.proto.assets import (
    ComputeSpec,
    CreateCompute,
    DatastoreSpec,
    DeleteCompute,
    EnvironmentSpec,
    GetAsset,
    ListAssets,
    RegisterDatastore,
    RegisterEnvironment,
)
from cairn.proto.events import AssetRegistered
from cairn.rpc import Client
from cairn.secrets import unseal
from cairn.settings import Settings
from tests.conftest import add_people


def cid() -> str:
    return uuid.uuid4().hex


async def test_compute_needs_the_operator_role(
    client: Client, people: dict[str, Connection], admin_conn: Connection
) -> None:
    await add_people(admin_conn, client.workspace, "dana", "olga")
    dana = Client(people["dana"], client.workspace)  # a data scientist
    olga = Client(people["olga"], client.workspace)  # a compute operator
    spec = ComputeSpec(kind="cluster", min_nodes=0, max_nodes=4, labels=["gpu"])
    with pytest.raises(PermissionDenied):
        await dana.send(CreateCompute(command_id=cid(), name="gpu-cluster", spec=spec))
    await olga.send(CreateCompute(command_id=cid(), name="gpu-cluster", spec=spec))
    with pytest.raises(AlreadyExists):
        await olga.send(CreateCompute(command_id=cid(), name="gpu-cluster", spec=spec))
    with pytest.raises(PermissionDenied):
        await dana.send(DeleteCompute(command_id=cid(), name="gpu-cluster"))
    got = await client.ask(GetAsset(asset_kind="compute", name="gpu-cluster"))
    assert got.data["spec"]["labels"] == ["gpu"] and got.data["spec"]["max_nodes"] == 4
    done = await olga.send(DeleteCompute(command_id=cid(), name="gpu-cluster"))
    with pytest.raises(NotFound):
        await client.ask(GetAsset(asset_kind="compute", name="gpu-cluster", min_seq=done.seq))
    listed = await client.ask(ListAssets(asset_kind="compute", min_seq=done.seq))
    assert [c["name"] for c in listed.data] == ["local"]


async def test_environments_versions_and_the_reserved_prefix(client: Client) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        await client.send(
            RegisterEnvironment(command_id=cid(), name="cairn-mine", spec=EnvironmentSpec())
        )
    spec = EnvironmentSpec(python="3.11", pip=["numpy==2.1"], env_vars={"A": "1", "B": "2"})
    await client.send(RegisterEnvironment(command_id=cid(), name="train", spec=spec))
    same = EnvironmentSpec(python="3.11", pip=["numpy==2.1"], env_vars={"B": "2", "A": "1"})
    await client.send(RegisterEnvironment(command_id=cid(), name="train", spec=same))
    v2 = await client.send(
        RegisterEnvironment(command_id=cid(), name="train", spec=EnvironmentSpec(python="3.12"))
    )
    latest = await client.ask(GetAsset(asset_kind="environment", name="train"))
    first = await client.ask(GetAsset(asset_kind="environment", name="train", version=1))
    assert latest.data["version"] == 2 and first.data["spec"]["pip"] == ["numpy==2.1"]
    curated = await client.ask(GetAsset(asset_kind="environment", name="cairn-sklearn"))
    assert curated.data["builtin"] and "scikit-learn" in curated.data["spec"]["pip"]
    names = [
        e["name"]
        for e in (await client.ask(ListAssets(asset_kind="environment", min_seq=v2.seq))).data
    ]
    assert names == [*sorted(CURATED), "train"]
    with pytest.raises(InvalidInput):  # hostile names never reach a subject raw
        await client.send(
            RegisterEnvironment(command_id=cid(), name="bad\x00name", spec=EnvironmentSpec())
        )


async def test_datastore_secrets_never_leave_sealed(
    client: Client,
    conn: Connection,
    service_settings: Settings,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secrets = {"access_key_id": "AKIA-SEALED-4242", "secret_access_key": "s3cr3t-XYZ-987"}
    spec = DatastoreSpec(kind="s3", endpoint_url="http://127.0.0.1:1", bucket="b1", prefix="p/")
    done = await client.send(
        RegisterDatastore(command_id=cid(), name="lake", spec=spec, credentials=secrets)
    )
    got = await client.ask(GetAsset(asset_kind="datastore", name="lake"))
    listed = await client.ask(ListAssets(asset_kind="datastore", min_seq=done.seq))
    default = await client.ask(GetAsset(asset_kind="datastore", name="workspaceblobstore"))
    assert got.data["spec"]["has_credentials"] is True
    assert "sealed_credentials" not in got.data["spec"]
    assert [d["name"] for d in listed.data] == ["lake", "workspaceblobstore", "workspacefilestore"]
    assert default.data["builtin"] and default.data["spec"]["kind"] == "local"

    store = EventStore(conn)
    everything = b""
    for seq in range(1, await store.last_seq() + 1):
        msg = await conn.nc.request("$JS.API.DIRECT.GET.EVENTS", json.dumps({"seq": seq}).encode())
        everything += msg.data
    replies = json.dumps([got.data, listed.data])
    logs = "".join(capfd.readouterr())
    for secret in secrets.values():
        assert secret.encode() not in everything, "a secret reached the EVENTS stream"
        assert secret not in replies and secret not in logs
    stored = await store.read(subjects.event(client.workspace, "datastore", "lake"))
    registered = stored[0].envelope.data
    assert isinstance(registered, AssetRegistered) and isinstance(registered.spec, DatastoreSpec)
    token = registered.spec.sealed_credentials
    assert token and unseal(service_settings, client.workspace, token) == secrets
