"""Workspace secrets and the workspace keyring.

A secret is an aggregate per workspace and name: versions of a value the registry sealed before
deciding (the domain sees tokens only, never a value), its deletion, and every read of it. The
keyring aggregate (one per workspace, its id the workspace's) records key rotations: key ids,
never keys.
"""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import NotFound
from cairn.proto.events import (
    Event,
    SecretDeleted,
    SecretRead,
    SecretResealed,
    SecretSet,
    WorkspaceKeyRotated,
)
from cairn.proto.secrets import KEYRING_KIND, SECRET_KIND, DeleteSecret

__all__ = [
    "AGGREGATE",
    "KEYRING",
    "KeyringCommand",
    "KeyringState",
    "ReadValue",
    "RecordRotation",
    "ResealValue",
    "SecretCommand",
    "SecretState",
    "StoreValue",
    "decide",
    "decide_keyring",
    "evolve",
    "evolve_keyring",
]


class SecretState(msgspec.Struct, frozen=True, kw_only=True):
    """``version``: the highest version ever set (a secret set again after a deletion goes
    on counting); ``sealed`` and ``key_id``: the live value's token and the key that sealed it
    (None once deleted)."""

    name: str = ""
    version: int = 0
    sealed: str | None = None
    key_id: str | None = None
    reads: int = 0

    @property
    def live(self) -> bool:
        return self.sealed is not None


def evolve(state: SecretState, event: Event) -> SecretState:
    match event:
        case SecretSet(name=name, version=version, sealed=sealed, key_id=key_id):
            return SecretState(
                name=name, version=version, sealed=sealed, key_id=key_id, reads=state.reads
            )
        case SecretResealed(version=version, sealed=sealed, key_id=key_id):
            if version == state.version and state.live:
                return msgspec.structs.replace(state, sealed=sealed, key_id=key_id)
        case SecretDeleted():
            return msgspec.structs.replace(state, sealed=None, key_id=None)
        case SecretRead():
            return msgspec.structs.replace(state, reads=state.reads + 1)
    return state


class StoreValue(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Set secret ``name`` to the value the registry sealed into ``sealed`` under key
    ``key_id``: the next version."""

    name: str
    sealed: str
    key_id: str

    def __repr__(self) -> str:
        return f"StoreValue(name={self.name!r}, key_id={self.key_id!r}, sealed=<hidden>)"


class ReadValue(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``reader`` (the attested actor) reads the live value, from run ``run_id`` if any."""

    name: str
    reader: str
    run_id: str | None = None


class ResealValue(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Replace version ``version``'s token by ``sealed`` (the same value under key
    ``key_id``); nothing when the secret has changed or is already sealed under that key."""

    name: str
    version: int
    sealed: str
    key_id: str

    def __repr__(self) -> str:
        return f"ResealValue(name={self.name!r}, version={self.version}, sealed=<hidden>)"


SecretCommand = StoreValue | DeleteSecret | ReadValue | ResealValue


def decide(state: SecretState, command: SecretCommand) -> list[Event]:
    match command:
        case StoreValue(name=name, sealed=sealed, key_id=key_id):
            return [SecretSet(name=name, version=state.version + 1, sealed=sealed, key_id=key_id)]
        case DeleteSecret(name=name):
            if not state.live:
                raise NotFound(f"no secret called {name!r}")
            return [SecretDeleted(name=name)]
        case ReadValue(name=name, reader=reader, run_id=run_id):
            if not state.live:
                raise NotFound(f"no secret called {name!r}")
            return [SecretRead(name=name, version=state.version, reader=reader, run_id=run_id)]
        case ResealValue(name=name, version=version, sealed=sealed, key_id=key_id):
            if not state.live or state.version != version or state.key_id == key_id:
                return []
            return [SecretResealed(name=name, version=version, sealed=sealed, key_id=key_id)]


AGGREGATE: Aggregate[SecretState, SecretCommand] = Aggregate(
    kind=SECRET_KIND, initial=SecretState(), evolve=evolve, decide=decide, commands=SecretCommand
)


class KeyringState(msgspec.Struct, frozen=True, kw_only=True):
    """The current key's id and the ids of every key retired and dropped (as the log says)."""

    current: str | None = None
    rotations: int = 0
    dropped: list[str] = msgspec.field(default_factory=list)


def evolve_keyring(state: KeyringState, event: Event) -> KeyringState:
    match event:
        case WorkspaceKeyRotated(key_id=key_id, dropped=dropped):
            return KeyringState(
                current=key_id, rotations=state.rotations + 1, dropped=[*state.dropped, *dropped]
            )
    return state


class RecordRotation(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """What a rotation did (the key files changed first): always one event."""

    key_id: str
    previous: list[str]
    dropped: list[str]
    resealed_secrets: int
    resealed_datastores: int


KeyringCommand = RecordRotation


def decide_keyring(state: KeyringState, command: KeyringCommand) -> list[Event]:
    match command:
        case RecordRotation():
            return [
                WorkspaceKeyRotated(
                    key_id=command.key_id,
                    previous=command.previous,
                    dropped=command.dropped,
                    resealed_secrets=command.resealed_secrets,
                    resealed_datastores=command.resealed_datastores,
                )
            ]


KEYRING: Aggregate[KeyringState, KeyringCommand] = Aggregate(
    kind=KEYRING_KIND,
    initial=KeyringState(),
    evolve=evolve_keyring,
    decide=decide_keyring,
    commands=KeyringCommand,
)
