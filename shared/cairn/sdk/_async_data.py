"""The async core of data: datastores' files and dataset versions. The bytes move through
:mod:`cairn.data` (with this workspace's client and this process's key); this module adds
what a client remembers (the sequences it caused) and the registry's records."""

from __future__ import annotations

import builtins
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from cairn.data import (
    Entry,
    download_prefix,
    fingerprint,
    list_entries,
    materialise,
    resolve_urls,
    snapshot_files,
    snapshot_url_files,
    upload_pairs,
)
from cairn.proto.assets import DataFile, DatasetSpec, GetAsset, ListAssets, RegisterDataset
from cairn.proto.jobs import DatasetRuns
from cairn.sdk._session import Session, as_of_fields, new_id

__all__ = ["AsyncDatasets", "AsyncDatastores"]


class AsyncDatastores:
    """``ws.datastores``: files into, out of and in a registered datastore."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def upload(
        self,
        datastore: str,
        pairs: list[tuple[Path, str]],
        *,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> list[DataFile]:
        """Each ``(local file, datastore path)``; existing files are kept unless
        ``overwrite``. Returns (and records) what was written. A bar of the bytes shows on a
        terminal (``show_progress=None``), or when asked (``True``)."""
        s = self._session
        uploaded = await upload_pairs(
            s.client,
            datastore,
            pairs,
            overwrite=overwrite,
            show_progress=show_progress,
            settings=s.settings,
        )
        s.saw_seq(uploaded.seq)
        return uploaded.files

    async def download(
        self,
        datastore: str,
        target: Path,
        prefix: str = "",
        *,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> list[Path]:
        """The files under ``prefix`` into ``target/<their path>``."""
        s = self._session
        return await download_prefix(
            s.client,
            datastore,
            prefix.strip("/"),
            target,
            overwrite=overwrite,
            show_progress=show_progress,
            settings=s.settings,
        )

    async def list_files(self, datastore: str, prefix: str = "") -> list[Entry]:
        s = self._session
        return await list_entries(s.client, datastore, prefix, settings=s.settings)


class AsyncDatasets:
    """``ws.datasets``: versions recorded with the fingerprint of the files they match."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(
        self,
        name: str,
        version: int | None = None,
        *,
        min_seq: int = 0,
        as_of: datetime | int | None = None,
    ) -> dict[str, Any]:
        """The record of a version (the latest unless ``version``; ``as_of``: the latest
        then, as the log held it); ``spec`` as a dict."""
        when = as_of_fields(as_of)
        q = GetAsset(asset_kind="dataset", name=name, version=version, min_seq=min_seq, **when)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data

    async def list(self, *, as_of: datetime | int | None = None) -> builtins.list[dict[str, Any]]:
        """The latest version of every dataset; ``as_of``: as the log held them then."""
        q = ListAssets(asset_kind="dataset", min_seq=self._session.seen_seq, **as_of_fields(as_of))
        rows: builtins.list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def versions(
        self, name: str, *, as_of: datetime | int | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Every version of dataset ``name``, oldest first; ``as_of``: those the log held
        then (``NotFound`` when it had none)."""
        q = ListAssets(
            asset_kind="dataset", name=name, min_seq=self._session.seen_seq, **as_of_fields(as_of)
        )
        rows: builtins.list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def spec(
        self, name: str, version: int | None = None, *, min_seq: int = 0
    ) -> tuple[dict[str, Any], DatasetSpec]:
        record = await self.get(name, version, min_seq=min_seq)
        return record, msgspec.convert(record["spec"], DatasetSpec)

    async def register(
        self,
        name: str,
        spec: DatasetSpec,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        create_new_version: bool = False,
        snapshot: bool = False,
        show_progress: bool | None = None,
    ) -> dict[str, Any]:
        """Record ``spec`` and the fingerprint of the files it matches now (with ``snapshot``,
        copies of them too, with a bar of the bytes copied) as a version of ``name``; returns
        the version's record."""
        # the files matched now (a spec read from a version is fingerprinted afresh)
        spec = await self.resolved(msgspec.structs.replace(spec, files=[], url_files=[]))
        url_files, s = spec.url_files, self._session
        files = spec.files
        if snapshot:
            files = await snapshot_files(s.client, files, settings=s.settings, show=show_progress)
            url_files = await snapshot_url_files(
                s.client,
                url_files,
                show=show_progress,
                allow_private=s.settings.url_allow_private_hosts,
            )
        versioned = msgspec.structs.replace(
            spec, files=files, url_files=url_files, snapshot=snapshot
        )
        cmd = RegisterDataset(
            command_id=new_id(),
            name=name,
            spec=versioned,
            description=description,
            create_new_version=create_new_version,
            tags=dict(tags or {}),
        )
        reply = await self._session.send(cmd)
        # the version this command made (or found) is the latest as of its own event; the
        # latest now may be another client's, registered since
        return await self.get(name, as_of=reply.seq)

    async def resolved(self, spec: DatasetSpec) -> DatasetSpec:
        """``spec`` with its URLs resolved (an ``s3://`` one to its bucket's datastore, the
        others' files with their validators) and the files its paths match now."""
        s = self._session
        spec = await resolve_urls(s.client, spec, allow_private=s.settings.url_allow_private_hosts)
        if spec.files:
            return spec
        files = await fingerprint(s.client, spec, settings=s.settings)
        return msgspec.structs.replace(spec, files=files)

    async def files(self, spec: DatasetSpec) -> builtins.list[DataFile]:
        """Every file the spec's paths match now, with its digest or ETag."""
        s = self._session
        return await fingerprint(s.client, spec, settings=s.settings)

    async def materialise(
        self,
        spec: DatasetSpec,
        target: Path,
        *,
        label: str = "dataset",
        show: bool | None = None,
    ) -> builtins.list[Path]:
        """A version's files under ``target``, checked against its fingerprint."""
        s = self._session
        return await materialise(
            s.client, spec, target, label=label, show=show, settings=s.settings
        )

    async def runs(self, name: str, version: int | None = None) -> builtins.list[dict[str, Any]]:
        """The runs that read a version of dataset ``name``."""
        q = DatasetRuns(dataset=name, version=version)
        rows: builtins.list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows
