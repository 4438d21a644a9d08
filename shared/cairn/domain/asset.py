"""Environments, datastores and compute targets: an aggregate per name, versions of a spec."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import msgspec

from cairn.domain import Aggregate
from cairn.domain.environment import CURATED
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.assets import (
    ASSET_KINDS,
    AssetSpec,
    ComputeSpec,
    DatastoreSpec,
    RecordUpload,
)
from cairn.proto.events import (
    AssetDeleted,
    AssetRegistered,
    DatastoreCredentialsResealed,
    DatastoreFilesUploaded,
    Event,
)

__all__ = [
    "AGGREGATES",
    "CURATED",
    "AssetCommand",
    "AssetState",
    "DeleteAsset",
    "RegisterAsset",
    "ResealCredentials",
    "aggregate",
    "builtin_assets",
    "decide",
    "evolve",
    "resolve",
    "spec_hash",
]


class AssetState(msgspec.Struct, frozen=True, kw_only=True):
    versions: dict[int, AssetRegistered] = msgspec.field(default_factory=dict)
    deleted: bool = False

    @property
    def latest(self) -> AssetRegistered | None:
        return self.versions[max(self.versions)] if self.versions else None


def evolve(state: AssetState, event: Event) -> AssetState:
    match event:
        case AssetRegistered(version=version):
            return AssetState(versions={**state.versions, version: event}, deleted=False)
        case AssetDeleted():
            return msgspec.structs.replace(state, deleted=True)
        case DatastoreCredentialsResealed(version=version, sealed_credentials=sealed):
            ev = state.versions.get(version)
            if ev is not None and isinstance(ev.spec, DatastoreSpec):
                spec = msgspec.structs.replace(ev.spec, sealed_credentials=sealed)
                versions = {**state.versions, version: msgspec.structs.replace(ev, spec=spec)}
                return msgspec.structs.replace(state, versions=versions)
    return state


@functools.cache
def _defaults(cls: type) -> tuple[tuple[str, object], ...]:
    """Each field's encoded name and default value (looking fields up is slow: once a type)."""
    out = []
    for field in msgspec.structs.fields(cls):
        default = field.default
        if default is msgspec.NODEFAULT and field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        out.append((field.encode_name, default))
    return tuple(out)


def spec_hash(spec: AssetSpec) -> str:
    """SHA-256 of the spec with mapping keys sorted and fields at their defaults left out:
    equal specs, equal hashes, and a field added later (with a default) changes no hash."""
    builtins: dict[str, object] = msgspec.to_builtins(spec)
    for name, default in _defaults(type(spec)):
        if name in builtins and builtins[name] == default:
            del builtins[name]
    normal = msgspec.json.encode(builtins, order="sorted")
    return "sha256:" + hashlib.sha256(normal).hexdigest()


class RegisterAsset(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Register ``spec`` (as the registry will store it: a datastore's credentials sealed)
    under ``name``. ``new_version=False`` (a dataset registered without
    ``create_new_version``) refuses a spec that differs from the name's latest."""

    name: str
    spec: AssetSpec
    description: str = ""
    new_version: bool = True
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class DeleteAsset(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    name: str


class ResealCredentials(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Replace version ``version``'s sealed credentials ``replaces`` by ``sealed`` (the same
    credentials under workspace key ``key_id``: a rotation); nothing when that version no
    longer holds ``replaces`` (sealed again meanwhile)."""

    name: str
    version: int
    replaces: str
    sealed: str
    key_id: str

    def __repr__(self) -> str:
        return f"ResealCredentials(name={self.name!r}, version={self.version}, sealed=<hidden>)"


AssetCommand = RegisterAsset | DeleteAsset | RecordUpload | ResealCredentials


def decide(state: AssetState, command: AssetCommand) -> list[Event]:
    match command:
        case RegisterAsset():
            return _register(state, command)
        case DeleteAsset(name=name):
            if state.latest is None:
                raise NotFound(f"{name!r} does not exist")
            return [] if state.deleted else [AssetDeleted(name=name)]
        case RecordUpload(name=name, files=files):
            return [DatastoreFilesUploaded(name=name, files=files)]
        case ResealCredentials(name=name, version=version, sealed=sealed, key_id=key_id):
            ev = state.versions.get(version)
            spec = ev.spec if ev is not None else None
            if not isinstance(spec, DatastoreSpec) or spec.sealed_credentials != command.replaces:
                return []
            resealed = DatastoreCredentialsResealed(
                name=name, version=version, sealed_credentials=sealed, key_id=key_id
            )
            return [resealed]


def _register(state: AssetState, command: RegisterAsset) -> list[Event]:
    """The next version; none when the latest live version has this very spec. A compute
    target is created once (delete it to create it again)."""
    name, spec = command.name, command.spec
    digest = spec_hash(spec)
    latest = state.latest
    if latest is not None and not command.new_version and latest.spec_hash != digest:
        raise AlreadyExists(f"dataset {name!r} exists; register with create_new_version=True")
    if latest is not None and not state.deleted:
        if isinstance(spec, ComputeSpec):
            raise AlreadyExists(f"compute target {name!r} exists")
        if latest.spec_hash == digest and latest.tags == command.tags:
            return []
    version = max(state.versions, default=0) + 1
    registered = AssetRegistered(
        name=name,
        version=version,
        spec=spec,
        spec_hash=digest,
        description=command.description,
        tags=command.tags,
    )
    return [registered]


def _aggregate(kind: str) -> Aggregate[AssetState, AssetCommand]:
    return Aggregate(
        kind=kind, initial=AssetState(), evolve=evolve, decide=decide, commands=AssetCommand
    )


#: one aggregate per asset kind, all of this shape (the kind is each one's subject token)
AGGREGATES: dict[str, Aggregate[AssetState, AssetCommand]] = {
    kind: _aggregate(kind) for kind in ASSET_KINDS
}


def aggregate(kind: str) -> Aggregate[AssetState, AssetCommand]:
    """The aggregate of asset kind ``kind``."""
    try:
        return AGGREGATES[kind]
    except KeyError:
        raise InvalidInput(f"no asset kind {kind!r}") from None


def builtin_assets(home: Path, ws: str, kind: str) -> dict[str, AssetSpec]:
    """What every workspace has without registering it: curated environments, the two
    default datastores (local folders under ``<home>/datastores/<ws>``), local compute."""
    if kind == "environment":
        return dict(CURATED)
    if kind in ("dataset", "component"):
        return {}
    if kind == "datastore":
        root = home / "datastores" / ws
        return {
            "workspaceblobstore": DatastoreSpec(kind="local", path=str(root / "blob")),
            "workspacefilestore": DatastoreSpec(kind="local", path=str(root / "file")),
        }
    return {"local": ComputeSpec(kind="local", max_nodes=1)}


def resolve(
    state: AssetState, builtin: AssetSpec | None, kind: str, name: str, version: int | None
) -> AssetRegistered:
    """Version ``version`` (default: the latest) of a registered asset, else the built-in one
    of that name (which has version 1 only)."""
    if state.latest is not None and not state.deleted:
        ev = state.versions.get(version or state.latest.version)
        if ev is None:
            raise NotFound(f"{kind} {name!r} has no version {version}")
        return ev
    if builtin is None or version not in (None, 1):
        raise NotFound(f"no {kind} called {name!r}")
    return AssetRegistered(name=name, version=1, spec=builtin, spec_hash=spec_hash(builtin))
