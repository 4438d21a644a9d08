"""The async core of the registry's assets: environments, compute targets and datastores
(registration and lookup; datastores' files: :mod:`cairn.sdk._async_data`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cairn.data import check_store
from cairn.proto.assets import (
    AssetKind,
    ComponentSpec,
    ComputeSpec,
    CreateCompute,
    DatastoreSpec,
    DeleteCompute,
    EnvironmentSpec,
    GetAsset,
    ListAssets,
    RegisterComponent,
    RegisterDatastore,
    RegisterEnvironment,
)
from cairn.sdk._session import Session, as_of_fields, new_id

__all__ = ["AsyncAssets"]


class AsyncAssets:
    """``ws.assets``: every call is one registry command or query."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(
        self,
        kind: AssetKind,
        name: str,
        version: int | None = None,
        *,
        min_seq: int = 0,
        as_of: datetime | int | None = None,
    ) -> dict[str, Any]:
        """The record of asset ``name`` (the latest version unless ``version``); ``as_of``
        (a time, or a stream sequence) as the log held it then."""
        when = as_of_fields(as_of)
        q = GetAsset(asset_kind=kind, name=name, version=version, min_seq=min_seq, **when)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data

    async def list(
        self, kind: AssetKind, *, name: str | None = None, as_of: datetime | int | None = None
    ) -> list[dict[str, Any]]:
        """The latest record of every asset of ``kind`` (``name``: every version of that one,
        oldest first); ``as_of`` (a time, or a stream sequence): as the log held them then."""
        q = ListAssets(asset_kind=kind, name=name, **as_of_fields(as_of))
        rows: list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def register_environment(self, name: str, spec: EnvironmentSpec) -> dict[str, Any]:
        """Register ``spec`` as the next version of environment ``name``; returns the record."""
        reply = await self._session.send(
            RegisterEnvironment(command_id=new_id(), name=name, spec=spec)
        )
        return await self.get("environment", name, min_seq=reply.seq)

    async def register_component(
        self, name: str, spec: ComponentSpec, description: str = ""
    ) -> dict[str, Any]:
        """Register ``spec`` as the next version of component ``name`` (the same spec as the
        latest: no new version); returns the record."""
        cmd = RegisterComponent(command_id=new_id(), name=name, spec=spec, description=description)
        reply = await self._session.send(cmd)
        return await self.get("component", name, min_seq=reply.seq)

    async def register_datastore(
        self, name: str, spec: DatastoreSpec, credentials: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Register (or replace) datastore ``name``; the registry seals ``credentials``. An
        S3 bucket is checked first with them (it exists, they open it): a refusal is a typed
        error and nothing is registered."""
        await check_store(name, spec, credentials)
        cmd = RegisterDatastore(command_id=new_id(), name=name, spec=spec, credentials=credentials)
        reply = await self._session.send(cmd)
        return await self.get("datastore", name, min_seq=reply.seq)

    async def create_compute(self, name: str, spec: ComputeSpec) -> dict[str, Any]:
        """Create compute target ``name`` (the compute-operator role)."""
        reply = await self._session.send(CreateCompute(command_id=new_id(), name=name, spec=spec))
        return await self.get("compute", name, min_seq=reply.seq)

    async def delete_compute(self, name: str) -> None:
        await self._session.send(DeleteCompute(command_id=new_id(), name=name))
