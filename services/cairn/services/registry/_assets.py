"""Environments, datastores and compute targets in the registry service."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, EventStore, execute
from cairn.data import check_url
from cairn.domain import asset
from cairn.domain import run as runs
from cairn.domain.environment import CURATED, parse_reference
from cairn.errors import InvalidInput, PermissionDenied
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.assets import (
    CURATED_PREFIX,
    MAX_UPLOAD_RECORD,
    AssetSpec,
    ComponentSpec,
    CreateCompute,
    DatasetSpec,
    DatastoreSpec,
    DeleteCompute,
    GetAsset,
    ListAssets,
    RecordUpload,
    RegisterComponent,
    RegisterDataset,
    RegisterDatastore,
    RegisterEnvironment,
)
from cairn.proto.commands import Accepted
from cairn.proto.jobs import SNAPSHOT_FILE
from cairn.proto.paths import validate_run_path
from cairn.rpc import Request
from cairn.secrets import require_role, seal, sealing
from cairn.services.registry._projection import public_spec
from cairn.settings import Settings

__all__ = ["ASSET_COMMANDS", "AssetHandlers", "builtin_assets", "check_datastore_root"]

ASSET_COMMANDS = (
    RegisterEnvironment,
    RegisterComponent,
    RegisterDatastore,
    RecordUpload,
    CreateCompute,
    DeleteCompute,
    RegisterDataset,
)
COMPUTE_OPERATORS = "compute_operators"

_Register = (
    RegisterEnvironment | RegisterDatastore | CreateCompute | RegisterDataset | RegisterComponent
)
AssetWire = _Register | RecordUpload | DeleteCompute


def builtin_assets(settings: Settings, ws: str, kind: str) -> dict[str, AssetSpec]:
    return asset.builtin_assets(settings.home_path, ws, kind)


def datastore_roots(settings: Settings) -> list[Path]:
    """Where local datastores may be rooted: ``settings.datastore_roots`` (folders separated
    by ``os.pathsep``), by default ``<home>/datastores`` alone, resolved."""
    if settings.datastore_roots is None:
        return [(settings.home_path / "datastores").resolve()]
    roots = [r.strip() for r in settings.datastore_roots.split(os.pathsep) if r.strip()]
    return [Path(r).expanduser().resolve() for r in roots]


def check_datastore_root(settings: Settings, path: str) -> str:
    """Refuse a local datastore's folder unless it is absolute and lies, with every link in
    it resolved, inside one of the allowed roots (a job can be given any file under it)."""
    if not os.path.isabs(path):
        raise InvalidInput(f"a local datastore's path must be absolute, not {path!r:.200}")
    resolved = Path(path).resolve()
    roots = datastore_roots(settings)
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise PermissionDenied(
            f"local datastore path {path!r:.200} is outside the allowed roots"
            f" ({os.pathsep.join(map(str, roots)) or 'none'}); an operator may add a folder"
            " to the datastore_roots setting (CAIRN_DATASTORE_ROOTS)"
        )
    return path


def _view(
    name: str,
    version: int,
    spec: AssetSpec,
    builtin: bool,
    description: str = "",
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "spec": public_spec(spec),
        "description": description,
        "tags": dict(tags or {}),
        "builtin": builtin,
    }


class AssetHandlers:
    def __init__(self, store: EventStore, cache: AggregateCache, settings: Settings) -> None:
        self.store, self.cache, self.settings = store, cache, settings

    async def command(self, req: Request) -> Accepted:
        if isinstance(req.body, RegisterDatastore) and req.body.credentials:
            async with sealing(self.settings, req.workspace):  # sealed until stored
                return await self._command(req)
        return await self._command(req)

    async def _command(self, req: Request) -> Accepted:
        cmd: AssetWire = req.body
        kind = cmd.VERB.split(".")[0]
        command: asset.AssetCommand
        match cmd:
            case DeleteCompute(name=name):
                require_role(self.settings, req.actor, COMPUTE_OPERATORS)
                command = asset.DeleteAsset(name=name)
            case RecordUpload():
                await self._check_upload(req.workspace, cmd)
                command = cmd
            case _:
                spec = await self._checked_spec(req, cmd)
                dataset = cmd if isinstance(cmd, RegisterDataset) else None
                command = asset.RegisterAsset(
                    name=cmd.name,
                    spec=spec,
                    description=cmd.description,
                    new_version=dataset is None or dataset.create_new_version,
                    tags=dataset.tags if dataset is not None else {},
                )
        aggregate_id = subjects.name_to_id(cmd.name)
        return await execute(
            req.context(), asset.aggregate(kind), aggregate_id, command, cache=self.cache
        )

    async def _check_upload(self, ws: str, cmd: RecordUpload) -> None:
        await self._require_datastore(ws, cmd.name)
        if not 0 < len(cmd.files) <= MAX_UPLOAD_RECORD:
            raise InvalidInput(f"record 1 to {MAX_UPLOAD_RECORD} files at a time")
        for f in cmd.files:
            validate_run_path(f.path)

    async def _checked_spec(self, req: Request, cmd: _Register) -> AssetSpec:
        """Refuse what may not be registered; the spec as it will be stored."""
        match cmd:
            case RegisterEnvironment(name=name) if name.startswith(CURATED_PREFIX):
                raise InvalidInput(
                    f"the {CURATED_PREFIX!r} prefix is reserved for curated environments"
                )
            case CreateCompute():
                require_role(self.settings, req.actor, COMPUTE_OPERATORS)
            case RegisterDatastore(spec=spec, credentials=credentials):
                if spec.kind == "s3" and not spec.bucket:
                    raise InvalidInput("an S3 datastore needs a bucket")
                if spec.kind == "local" and not spec.path:
                    raise InvalidInput("a local datastore needs a path")
                if spec.kind == "local" and spec.path:
                    check_datastore_root(self.settings, spec.path)
                sealed = seal(self.settings, req.workspace, credentials) if credentials else None
                return msgspec.structs.replace(spec, sealed_credentials=sealed)
            case RegisterDataset(spec=spec):
                await self._check_dataset_paths(req.workspace, spec)
            case RegisterComponent(spec=spec):
                await self._check_component(req.workspace, spec)
        return cmd.spec

    async def _check_component(self, ws: str, spec: ComponentSpec) -> None:
        """Its snapshot was uploaded to the staging area it names."""
        if (spec.snapshot is None) != (spec.snapshot_area is None):
            raise InvalidInput("a component's snapshot needs its staging area, and the other way")
        if spec.snapshot is None or spec.snapshot_area is None:
            return
        staging = await lookup.state(self.cache, runs.STAGING, ws, spec.snapshot_area, fresh=True)
        if staging.files.get(SNAPSHOT_FILE) != spec.snapshot:
            raise InvalidInput(
                f"snapshot {spec.snapshot} was not uploaded to staging area {spec.snapshot_area}"
            )

    async def _check_dataset_paths(self, ws: str, spec: DatasetSpec) -> None:
        """Every path names a known datastore and stays inside it (wildcards allowed); every
        URL is one data may be read from, and each URL file lands inside the dataset."""
        if not spec.paths and not spec.url_files:
            raise InvalidInput("a dataset needs at least one path or URL")
        for url in spec.urls:
            check_url(url, "dataset URL")
        for u in spec.url_files:
            check_url(u.url, "dataset URL file")
            validate_run_path(u.path)
        for f in spec.files:
            validate_run_path(f.path)
            if f.size < 0 or f.datastore not in {p.datastore for p in spec.paths}:
                raise InvalidInput(f"dataset file {f.path!r} is outside the dataset's paths")
        for path in spec.paths:
            validate_run_path(path.pattern)
            await self._require_datastore(ws, path.datastore)

    async def _require_datastore(self, ws: str, name: str) -> None:
        datastores = asset.aggregate("datastore")
        state = await lookup.state(self.cache, datastores, ws, subjects.name_to_id(name))
        builtin = builtin_assets(self.settings, ws, "datastore").get(name)
        asset.resolve(state, builtin, "datastore", name, None)

    async def get(self, req: Request) -> tuple[dict[str, Any], int]:
        q: GetAsset = req.body
        name, version = q.name, q.version
        if q.asset_kind == "environment":  # Azure's references and curated names as written
            name, parsed = parse_reference(q.name)
            if name == q.name or name not in CURATED:
                version = parsed if version is None else version
            else:
                version = None
        subject = subjects.event(req.workspace, q.asset_kind, subjects.name_to_id(name))
        if q.as_of_seq is None and q.as_of_time is None:
            history = await self.cache.refresh(subject)
        else:  # from the log as it was then, folded whole
            history = await self.store.read_as_of(
                subject, up_to_seq=q.as_of_seq, up_to_time=q.as_of_time
            )
        state = self.cache.state(subject, asset.aggregate(q.asset_kind), history)
        seq = history[-1].seq if history else 0
        builtin = builtin_assets(self.settings, req.workspace, q.asset_kind).get(name)
        ev = asset.resolve(state, builtin, q.asset_kind, name, version)
        builtin_now = state.latest is None or state.deleted
        view = _view(ev.name, ev.version, ev.spec, builtin_now, ev.description, ev.tags)
        if q.sealed and isinstance(ev.spec, DatastoreSpec):
            view["sealed_credentials"] = ev.spec.sealed_credentials
        return view, seq

    def list(self, req: Request, db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
        """The latest version of each asset of the kind, the built-in ones too; with a name,
        every version of that one (a built-in's one, when it has no events)."""
        q: ListAssets = req.body
        if q.name is not None:
            return self._versions(req.workspace, q, db, t)
        rows = db.execute(
            f"SELECT name, max(version), spec, description FROM {t('assets')} a"
            " WHERE workspace = ? AND kind = ? AND deleted = 0"
            f" AND version = (SELECT max(version) FROM {t('assets')} b WHERE"
            " b.workspace = a.workspace AND b.kind = a.kind AND b.asset_id = a.asset_id)"
            " GROUP BY asset_id ORDER BY name",
            (req.workspace, q.asset_kind),
        ).fetchall()
        found = {name: _row(name, v, spec, d) for name, v, spec, d in rows}
        for name, spec in builtin_assets(self.settings, req.workspace, q.asset_kind).items():
            found.setdefault(name, _view(name, 1, spec, True))
        return [found[n] for n in sorted(found)]

    def _versions(
        self, ws: str, q: ListAssets, db: sqlite3.Connection, t: Tables
    ) -> builtins.list[dict[str, Any]]:
        assert q.name is not None
        rows = db.execute(
            f"SELECT name, version, spec, description FROM {t('assets')}"
            " WHERE workspace = ? AND kind = ? AND asset_id = ? AND deleted = 0 ORDER BY version",
            (ws, q.asset_kind, subjects.name_to_id(q.name)),
        ).fetchall()
        builtin = builtin_assets(self.settings, ws, q.asset_kind).get(q.name)
        if not rows and builtin is not None:
            return [_view(q.name, 1, builtin, True)]
        return [_row(name, v, spec, d) for name, v, spec, d in rows]


def _row(name: str, version: int, spec: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "spec": json.loads(spec),
        "description": description,
        "builtin": False,
    }
