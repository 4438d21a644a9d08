"""Environments, datastores and compute targets: an aggregate per name, versions of a spec."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

import msgspec

from cairn.errors import AlreadyExists, NotFound
from cairn.proto.assets import AssetSpec, ComputeSpec, DatastoreSpec, EnvironmentSpec
from cairn.proto.events import AssetDeleted, AssetRegistered, Event

__all__ = [
    "CURATED",
    "AssetState",
    "builtin_assets",
    "decide_delete",
    "decide_register",
    "fold",
    "resolve",
    "spec_hash",
]


class AssetState(msgspec.Struct, frozen=True, kw_only=True):
    versions: dict[int, AssetRegistered] = msgspec.field(default_factory=dict)
    deleted: bool = False

    @property
    def latest(self) -> AssetRegistered | None:
        return self.versions[max(self.versions)] if self.versions else None


def fold(events: Iterable[Event]) -> AssetState:
    versions: dict[int, AssetRegistered] = {}
    deleted = False
    for event in events:
        if isinstance(event, AssetRegistered):
            versions[event.version], deleted = event, False
        elif isinstance(event, AssetDeleted):
            deleted = True
    return AssetState(versions=versions, deleted=deleted)


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


def decide_register(
    state: AssetState, name: str, spec: AssetSpec, description: str = ""
) -> list[Event]:
    """The next version; none when the latest live version has this very spec. A compute
    target is created once (delete it to create it again)."""
    digest = spec_hash(spec)
    latest = state.latest
    if latest is not None and not state.deleted:
        if isinstance(spec, ComputeSpec):
            raise AlreadyExists(f"compute target {name!r} exists")
        if latest.spec_hash == digest:
            return []
    version = max(state.versions, default=0) + 1
    return [AssetRegistered(name=name, version=version, spec=spec, spec_hash=digest,
                            description=description)]  # fmt: skip


def decide_delete(state: AssetState, name: str) -> list[Event]:
    if state.latest is None:
        raise NotFound(f"{name!r} does not exist")
    return [] if state.deleted else [AssetDeleted(name=name)]


#: curated environments every workspace has (users cannot register the prefix)
CURATED: dict[str, EnvironmentSpec] = {
    "cairn-python-3.11": EnvironmentSpec(python="3.11"),
    "cairn-sklearn": EnvironmentSpec(python="3.11", pip=["scikit-learn", "pandas", "numpy"]),
}


def builtin_assets(home: Path, ws: str, kind: str) -> dict[str, AssetSpec]:
    """What every workspace has without registering it: curated environments, the two
    default datastores (local folders under ``<home>/datastores/<ws>``), local compute."""
    if kind == "environment":
        return dict(CURATED)
    if kind == "dataset":
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
